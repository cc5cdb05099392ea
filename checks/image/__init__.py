"""Image rules: integration components (1xx), generalization (2xx), embedded secrets (3xx), firewall (4xx), format (0xx)."""
