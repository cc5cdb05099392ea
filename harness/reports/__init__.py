"""Report writers: SARIF 2.1.0, JSON, HTML (jinja2), allure enrichment. Fed from a RunResult."""
