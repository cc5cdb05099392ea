"""vmrole-harness: test and validation harness for Windows Azure VM roles."""

__version__ = "0.1.0"
