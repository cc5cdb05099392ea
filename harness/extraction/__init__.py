"""Offline image facts: extraction in an isolated worker process, profiles, signatures."""
