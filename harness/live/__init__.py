"""Live probes: probe a deployment (the local fabric or a real one) and judge it with rules.

See CONTRACT.md in this folder for how the parts fit together.
"""
