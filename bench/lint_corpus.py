"""Lint the whole shared corpus (417 csdef/cscfg + 2 cspkg) and report files per second.

Named baseline: ``defusedxml-parse`` = parsing every XML file with defusedxml.ElementTree and opening
every package's zip directory, i.e. the least any linter must do. Ratios are time / baseline time, so
they travel between machines better than raw seconds.

Measurements (median of --repeat runs, each in a fresh process for the in-process stages so that no
cache from an earlier run helps):
  read      readers only: bytes → typed facts
  lint      readers + every rule, through harness.lint.lint (the subjects the plugin builds per item)
  cli       `vmrole lint <corpus> --no-allure` end to end: pytest start-up, collection, items, reports
            (about 9,200 items: one per rule and artefact), serially, with `-n 2` (which lints service
            models in one process) and with xdist forced (`-- -n 2 --dist load`), alternating so that all
            see the same machine load (which of them runs first rotates from round to round); ratios are of
            those medians, with the process tree's CPU seconds
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import defusedxml.ElementTree as SafeET

from bench.measure import children_cpu

REPO = Path(__file__).resolve().parent.parent


def corpus_files(samples: Path) -> list[Path]:
    models = sorted(p for p in (samples / "service-models").rglob("*") if p.suffix in (".csdef", ".cscfg"))
    return models + sorted((samples / "cspkg").glob("*.cspkg"))


def stage_baseline(files: list[Path]) -> None:
    for path in files:
        if path.suffix == ".cspkg":
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
            continue
        with contextlib.suppress(Exception):
            SafeET.fromstring(path.read_bytes(), forbid_dtd=True)


def stage_read(files: list[Path], root: Path) -> None:
    from harness.engine.artefact import Artefact, kind_of
    from harness.readers.errors import Unreadable
    from harness.subjects import read_facts

    for path in files:
        with contextlib.suppress(Unreadable):
            read_facts(Artefact.from_path(path, kind_of(path) or "", root))


def stage_lint(files: list[Path], root: Path) -> int:
    """Every rule on every file (unreadable ones get VMR001); returns the number of findings."""
    from harness.lint import LintOptions, lint

    return len(lint(files, LintOptions(root=root)).findings)


def _child(stage: str, samples: Path) -> float:
    """Time one stage in a fresh interpreter (imports excluded: the clock starts after them)."""
    code = (
        "import sys, time, json; from pathlib import Path; from bench import lint_corpus as b;"
        f"s=Path({str(samples)!r}); files=b.corpus_files(s);"
        "import harness.engine.catalogue as c; c.all_rules();"
        "import harness.readers.servicemodel, harness.readers.cspkg;"
        f"t=time.perf_counter(); r=b.stage_{stage}(files{', s' if stage != 'baseline' else ''});"
        "print(json.dumps({'seconds': time.perf_counter()-t, 'result': r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def _cli_timed(samples: Path, workers: int = 0, force: bool = False) -> tuple[float, float]:
    """(wall, CPU) seconds of one `vmrole lint` of the corpus (CPU: the whole process tree, xdist workers too)."""
    cpu = children_cpu()
    wall = _cli(samples, workers, force)
    return wall, children_cpu() - cpu


def _cli(samples: Path, workers: int = 0, force: bool = False) -> float:
    """`vmrole lint -n N` lints service models in one process (it says so); ``force`` runs pytest-xdist anyway
    (`-- -n N --dist load`, with a private --basetemp as `vmrole lint -- -n N` gives it)."""
    vmrole = Path(sys.executable).with_name("vmrole")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        parallel = ["-n", str(workers)] if workers and not force else []
        if workers and force:
            parallel = ["--", "-n", str(workers), "--dist", "load", "--basetemp", os.path.join(tmp, "bt")]
        proc = subprocess.run(
            [str(vmrole), "lint", str(samples), "--no-allure", "--report-dir", tmp, "-q", "-q", *parallel],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"vmrole lint failed with exit {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def main(repeat: int = 5, samples: str | None = None, *, stages_too: bool = True, xdist: bool = True) -> int:
    folder = Path(samples) if samples else REPO.parent / "shared" / "samples"
    if not folder.is_dir():
        print(f"bench: shared samples not found at {folder}", file=sys.stderr)
        return 2
    files = corpus_files(folder)
    n = len(files)
    stages = {
        "defusedxml-parse (baseline)": lambda: _child("baseline", folder),
        "read (readers → facts)": lambda: _child("read", folder),
        "lint (readers + all rules)": lambda: _child("lint", folder),
    }
    print(f"corpus: {n} files from {folder}; {repeat} runs each, median")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"{'stage':34} {'seconds':>9} {'files/s':>9} {'x baseline':>11}")
    base = None
    results = {}
    for name, run in stages.items() if stages_too else ():
        times = [run() for _ in range(repeat)]
        med = statistics.median(times)
        base = base or med
        results[name] = med
        print(f"{name:34} {med:9.3f} {n / med:9.0f} {med / base:11.1f}")
    _cli(folder)  # warm-up (bytecode, page cache)
    variants: dict[str, tuple[int, bool]] = {  # label -> (workers, force xdist)
        "cli (vmrole lint, end to end)": (0, False),
        "cli -n 2 (one process: no image)": (2, False),
        **({"cli -- -n 2 (xdist forced)": (2, True)} if xdist else {}),
    }
    labels = list(variants)
    pairs = []
    for round_ in range(repeat):  # the first of a round rotates: a busy machine's second run is often slower
        order = labels[round_ % len(labels) :] + labels[: round_ % len(labels)]
        timed = {label: _cli_timed(folder, *variants[label]) for label in order}
        pairs.append(tuple(timed[label] for label in labels))
    cpu = {}
    for index, label in enumerate(labels):
        med = statistics.median(p[index][0] for p in pairs)
        cpu[label] = statistics.median(p[index][1] for p in pairs)
        results[label] = med
        times_baseline = f"{med / base:11.1f}" if base else f"{'-':>11}"
        print(f"{label:34} {med:9.3f} {n / med:9.0f} {times_baseline}   CPU {cpu[label]:.1f} s")
    serial = results[labels[0]]
    ratio = results[labels[1]] / serial
    forced = results[labels[2]] / serial if xdist else None
    rounds = statistics.median(p[1][0] / p[0][0] for p in pairs)
    print(
        f"-n 2 / serial wall time: {ratio:.2f} (median of each round's ratio {rounds:.2f})"
        + (f"; xdist forced / serial: {forced:.2f}" if forced is not None else "")
        + f" (medians of {repeat} alternating rounds; load average {os.getloadavg()[0]:.1f})"
    )
    print("rounds (wall s, CPU s): " + "; ".join(", ".join(f"{w:.2f}/{c:.2f}" for w, c in p) for p in pairs))
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "lint_corpus.json").write_text(
        json.dumps(
            {
                "files": n,
                "median_seconds": results,
                "median_cpu_seconds": cpu,
                "pairs_wall_cpu": pairs,
                "ratio_n2_serial": ratio,
                "median_round_ratio_n2_serial": rounds,
                "ratio_xdist_forced_serial": forced,
            },
            indent=2,
        )
    )
    return 0


def cli(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.lint_corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="runs of each stage and rounds of the cli variants (median)")
    p.add_argument("--samples", default=None, help="the shared samples folder (default ../shared/samples)")
    p.add_argument("--cli-only", action="store_true", help="only the `vmrole lint` runs, not the in-process stages")
    p.add_argument("--no-xdist", action="store_true", help="leave out the xdist-forced variant (~1.5x a serial run)")
    a = p.parse_args(argv)
    return main(a.repeat, a.samples, stages_too=not a.cli_only, xdist=not a.no_xdist)


if __name__ == "__main__":
    sys.exit(cli())
