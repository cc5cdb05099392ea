"""Run every benchmark in bench/ and print the tables."""

from __future__ import annotations

import argparse
import sys

from bench import lint_corpus, live_suite


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median reported)")
    parser.add_argument("--samples", default=None, help="the shared samples folder (default ../shared/samples)")
    parser.add_argument(
        "which", nargs="*", default=["lint", "rotation", "live"], help="benchmarks to run: lint, rotation, live"
    )
    args = parser.parse_args()
    status = 0
    if "lint" in args.which:
        status |= lint_corpus.main(repeat=args.repeat, samples=args.samples)
    if "rotation" in args.which:
        from bench import rotation

        status |= rotation.main(repeat=30)
    if "live" in args.which:
        status |= live_suite.main(repeat=max(1, min(args.repeat, 3)))
    return status


if __name__ == "__main__":
    sys.exit(main())
