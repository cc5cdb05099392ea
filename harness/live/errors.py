"""Exceptions of the live probes."""


class TargetError(Exception):
    """The target file cannot be used; the message names the file, the key and the problem."""


class StageError(Exception):
    """A stage cannot run at all (e.g. the management API is unreachable); the reason is shown."""
