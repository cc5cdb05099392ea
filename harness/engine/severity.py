"""Severities ship with each rule, drive the gate, and can be overridden per run."""

from __future__ import annotations

import enum


class Severity(enum.IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of: {names})") from None

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def sarif_level(self) -> str:
        """SARIF 2.1.0 `level`: error / warning / note."""
        if self >= Severity.HIGH:
            return "error"
        if self is Severity.MEDIUM:
            return "warning"
        return "note"

    @property
    def security_severity(self) -> str:
        """GitHub code scanning `security-severity` (CVSS-like 0.0-10.0 as a string)."""
        return {4: "9.5", 3: "7.5", 2: "5.0", 1: "2.5", 0: "0.0"}[int(self)]

    def __str__(self) -> str:
        return self.label
