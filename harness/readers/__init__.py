"""Readers: the only code that touches raw bytes. They turn files into typed facts."""
