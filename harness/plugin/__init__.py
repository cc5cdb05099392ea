"""The pytest plugin (entry point ``pytest11`` → harness.plugin.main)."""
