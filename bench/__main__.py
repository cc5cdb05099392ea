"""Run every benchmark in bench/ and print the tables."""

from __future__ import annotations

import argparse
import sys

from bench import lint_corpus


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median reported)")
    parser.add_argument("--samples", default=None, help="the shared samples folder (default ../shared/samples)")
    args = parser.parse_args()
    return lint_corpus.main(repeat=args.repeat, samples=args.samples)


if __name__ == "__main__":
    sys.exit(main())
