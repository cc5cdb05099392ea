"""Service-model rules (5xx): csdef, cscfg and cspkg consistency and safety."""
