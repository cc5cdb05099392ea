"""Live rules: 6xx endpoints and in-guest checks, 7xx reimage persistence, 8xx load balancer."""
