"""Run every benchmark in bench/ and print the tables.

``python -m bench image [OPTIONS]`` runs the image-suite benchmark against virt-inspector and target-query;
everything after the word ``image`` goes to it (``python -m bench image --help``). It is not in the default set:
its anchors are large and ``./dev bench image`` installs them. ``python -m bench blob`` lints the same image from a
local Azurite and from disk (bench/blob_lint.py; ``python -m bench.blob_lint --help`` for its options).
"""

from __future__ import annotations

import argparse
import sys

from bench import lint_corpus, live_suite


def main() -> int:
    argv = sys.argv[1:]
    image_args = None
    if "image" in argv:
        at = argv.index("image")
        argv, image_args = argv[: at + 1], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement (median; default 5, image 3)")
    parser.add_argument("--samples", default=None, help="the shared samples folder (default ../shared/samples)")
    parser.add_argument(
        "which",
        nargs="*",
        default=["lint", "rotation", "live"],
        help="benchmarks to run: lint, rotation, live, blob, many-images (8 factory images: -n 0, -n 2, default), "
        "image (image takes its own options after it)",
    )
    args = parser.parse_args(argv)
    repeat = args.repeat or 5
    status = 0
    if "lint" in args.which:
        status |= lint_corpus.main(repeat=repeat, samples=args.samples)
    if "rotation" in args.which:
        from bench import rotation

        status |= rotation.main(repeat=30)
    if "live" in args.which:
        status |= live_suite.main(repeat=max(1, min(repeat, 3)))
    if "blob" in args.which:  # an image in (Azurite) blob storage vs on disk: not in the default set (~2 min)
        from bench import blob_lint

        status |= blob_lint.main([])
    if "many-images" in args.which:  # builds eight factory images first: not in the default set
        from bench import many_images

        status |= many_images.main(repeat=args.repeat or 3)
    if image_args is not None:
        from bench import image_suite

        status |= image_suite.cli([*image_args, *(["--repeat", str(args.repeat)] if args.repeat else [])])
    return status


if __name__ == "__main__":
    sys.exit(main())
