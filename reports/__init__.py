"""Report templates (installed as harness.report_templates). Report output written here is git-ignored."""
