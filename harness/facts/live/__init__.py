"""Typed facts the live probes gather (one module per stage)."""
