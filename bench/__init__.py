"""Benchmarks (run with `./dev bench` or `python -m bench`). Results are recorded in bench/RESULTS.md."""
