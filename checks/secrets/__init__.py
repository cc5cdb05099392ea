"""Keys and secrets rules (3xx)."""
