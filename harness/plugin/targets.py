"""The plugin's names for subject building, which lives in :mod:`harness.subjects` (below the plugin, shared
with :func:`harness.lint.lint`); kept so that existing imports keep working."""

from harness.subjects import ImageSettings, Pairing, SubjectResult, build_subject, read_facts, sibling_definition

__all__ = ["ImageSettings", "Pairing", "SubjectResult", "build_subject", "read_facts", "sibling_definition"]
