"""Live probe stages (see harness/live/CONTRACT.md): the only code that talks to a deployment."""
