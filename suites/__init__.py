"""pytest suites users run (live suites arrive with the live issues)."""
