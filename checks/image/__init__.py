"""Image rules: format (01x), integration components (1xx), generalization (2xx), secrets (31x), firewall (4xx)."""
