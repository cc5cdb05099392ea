"""The one exception readers raise for bad input."""

from __future__ import annotations

from pathlib import Path


class Unreadable(Exception):
    """A file the harness cannot read. ``problem`` says what is wrong, in words for a person.

    Readers raise only this for bad input (malformed XML, forbidden DTD, zip bomb, bad member name,
    wrong encoding, over a size cap, …): never a bare library exception, never a traceback for the user.
    """

    def __init__(self, path: Path | str, problem: str, *, location: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.location = location
        super().__init__(f"{self.path}: {problem}")
