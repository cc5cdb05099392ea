"""Typed facts: what readers extract from bytes and rules look at."""
