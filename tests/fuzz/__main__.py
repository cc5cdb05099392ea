"""The fuzzing runner: ``python -m tests.fuzz COMMAND`` (``./dev fuzz`` runs ``run``).

  run [TARGET ...] [--seconds N]   fuzz each target (all by default) for N seconds with its kept corpus, one
                                   process at a time; print executions, crashes, max time per input, peak RSS
                                   and coverage; add to tests/fuzz/tally.json and rewrite bench/FUZZING.md
  seeds                            (re)build the generated seeds into the kept corpora
  merge [TARGET ...]               minimise the kept corpora (libFuzzer -merge=1)
  replay [TARGET ...]              every kept corpus and regression input through the contract
  cover [TARGET ...]               line/branch coverage of each target's modules over its corpus
  report                           rewrite bench/FUZZING.md from the tally
  worker TARGET [libFuzzer args]   (internal) one atheris process

Crash inputs and libFuzzer artefacts go to tests/fuzz/artifacts/<target>/ (git-ignored), never to the repo root.
The kept corpora (tests/fuzz/corpus/<target>/, in git) hold inputs up to 64 KiB that are not derived from the real
samples; larger or sample-derived inputs stay in tests/fuzz/corpus-local/<target>/ (git-ignored, this machine only).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.fuzz.targets import FUZZ_DIR, TARGETS, Contract, Target, corpus_dir, inputs, regressions_dir

REPO = FUZZ_DIR.parent.parent
ARTIFACTS = FUZZ_DIR / "artifacts"
TALLY = FUZZ_DIR / "tally.json"
REPORT = REPO / "bench" / "FUZZING.md"
SAMPLES = Path(os.environ.get("VMR_SAMPLES", REPO.parent / "shared" / "samples"))
RSS_LIMIT_MB = 1024
CAMPAIGN = 1_000_000  # executions per target the campaign aims at, over all runs
LIBFUZZER_TIMEOUT = 10
ADDRESS_SPACE = 6 << 30  # a runaway allocation becomes a MemoryError (a crash) instead of eating the machine


def sample_dirs(name: str) -> list[Path]:
    """Read-only seed folders outside the repo (real files: read at run time, never copied in)."""
    found = {
        "xml": ["service-models"],
        "csdef": ["service-models"],
        "cscfg": ["service-models"],
        "unattend": [],
        "zip": ["cspkg"],
        "cspkg": ["cspkg"],
        "regf": ["hives/base", "hives/malformed"],
    }.get(name, [])
    out = []
    for rel in found:
        folder = SAMPLES / rel
        if folder.is_dir():
            out.append(folder)
    return out


def sample_files(name: str) -> list[Path]:
    files: list[Path] = []
    suffix = {"csdef": ".csdef", "cscfg": ".cscfg"}.get(name)
    for folder in sample_dirs(name):
        for p in sorted(folder.rglob("*")):
            if not p.is_file() or p.suffix in (".md", ".tsv", ".xz"):
                continue
            if suffix is None or p.suffix.lower() == suffix or name == "xml":
                files.append(p)
    return files


# ---- worker (inside the atheris process) -------------------------------------------------------------------------


def _module_names(target: Target) -> list[str]:
    return [m.removesuffix(".py").replace("/", ".") for m in target.modules]


def _crash_signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    for frame in reversed(frames):
        if "/harness/" in frame.filename:
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            break
    return f"{type(exc).__name__}@{where}"


def worker(argv: list[str]) -> None:
    import atheris

    name = argv[0]
    target = TARGETS[name]
    with atheris.instrument_imports(include=["harness"]):
        import importlib

        for module in _module_names(target):
            importlib.import_module(module)
        with contextlib.suppress(BaseException):  # the targets import some modules lazily: now, instrumented
            target.run(b"")
    contract = Contract(target)
    stats_path = os.environ.get("VMR_FUZZ_STATS")
    keep_going = os.environ.get("VMR_FUZZ_KEEP_GOING") == "1"
    artifacts = ARTIFACTS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    crashes: dict[str, int] = {}
    last_write = [0.0]

    def save_stats() -> None:
        if not stats_path:
            return
        s = contract.stats
        payload = {
            "execs": s.execs,
            "errors": s.errors,
            "max_cpu": s.max_cpu,
            "max_cpu_len": s.max_cpu_len,
            "crashes": crashes,
        }
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(payload, fh)
        os.replace(tmp, stats_path)

    def one(data: bytes) -> None:
        try:
            contract(data)
        except BaseException as exc:
            if not keep_going or isinstance(exc, KeyboardInterrupt):
                save_stats()
                raise
            sig = _crash_signature(exc)
            first = sig not in crashes
            crashes[sig] = crashes.get(sig, 0) + 1
            if first:  # one input per distinct crash, with its traceback
                import hashlib

                stem = f"crash-{re.sub(r'[^A-Za-z0-9_.@-]', '_', sig)}-{hashlib.sha1(data).hexdigest()[:12]}"
                (artifacts / stem).write_bytes(data)
                (artifacts / (stem + ".txt")).write_text("".join(traceback.format_exception(exc)))
                print(f"fuzz: new crash {sig} -> {artifacts / stem}", file=sys.stderr, flush=True)
            save_stats()
        now = time.monotonic()
        if now - last_write[0] > 1.0:
            last_write[0] = now
            save_stats()

    # libFuzzer re-runs argv[0] through the shell for -merge=1: make it a command that works there.
    argv0 = f"{sys.executable} -m tests.fuzz worker {name}"
    atheris.Setup([argv0, *argv[1:]], one)
    atheris.Fuzz()


# ---- orchestration -----------------------------------------------------------------------------------------------


def _python() -> str:
    return sys.executable


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _spawn(args: list[str], *, env: dict[str, str], log: Path) -> tuple[int, int]:
    """Run a child (one at a time), its stdout+stderr to ``log``; (exit code, peak RSS in KiB)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_limit_memory)
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.terminate()
            _pid, status, usage = os.wait4(proc.pid, 0)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, int(usage.ru_maxrss)


def local_dirs(name: str) -> list[Path]:
    return [local_dir(name)] if local_dir(name).is_dir() else []


def fuzz_one(name: str, seconds: int, *, keep_going: bool = True) -> dict[str, Any]:
    target = TARGETS[name]
    kept = corpus_dir(name)
    kept.mkdir(parents=True, exist_ok=True)
    artifacts = ARTIFACTS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    stats_path = scratch / "stats.json"
    env = _env()
    env["VMR_FUZZ_STATS"] = str(stats_path)
    env["VMR_FUZZ_KEEP_GOING"] = "1" if keep_going else "0"
    args = [
        _python(), "-m", "tests.fuzz", "worker", name, str(kept), *map(str, [*local_dirs(name), *sample_dirs(name)]),
        f"-max_total_time={seconds}", f"-timeout={LIBFUZZER_TIMEOUT}", f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-max_len={target.max_len}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
        "-reload=0",
    ]  # fmt: skip
    log = artifacts / "last-run.log"
    started = time.monotonic()
    code, rss_kib = _spawn(args, env=env, log=log)
    wall = time.monotonic() - started
    text = log.read_text("utf-8", "replace")
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    shutil.rmtree(scratch, ignore_errors=True)
    m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text) or re.findall(r"Done (\d+) runs", text)
    execs = int(m[-1]) if m else int(stats.get("execs", 0))
    execs = max(execs, int(stats.get("execs", 0)))
    crash_kinds = dict(stats.get("crashes", {}))
    libfuzzer_artifacts = re.findall(r"Test unit written to (\S+)", text)
    hangs = sum(1 for a in libfuzzer_artifacts if "/timeout-" in a) + sum(
        n for k, n in crash_kinds.items() if k.startswith("Hang@")
    )
    ooms = sum(1 for a in libfuzzer_artifacts if "/oom-" in a)
    stopped = None
    if code not in (0,):
        stopped = f"exit {code}"
        tb = re.findall(r"=== Uncaught Python exception: ===\n(.+?)\n", text)
        if tb:
            stopped += f": {tb[0]}"
    return {
        "target": name,
        "seconds": round(wall, 1),
        "execs": execs,
        "execs_per_s": round(execs / wall, 1) if wall else 0.0,
        "crashes": sum(crash_kinds.values()) + sum(1 for a in libfuzzer_artifacts if "/crash-" in a),
        "crash_kinds": crash_kinds,
        "hangs": hangs,
        "ooms": ooms,
        "max_cpu_s": round(float(stats.get("max_cpu", 0.0)), 4),
        "max_cpu_len": int(stats.get("max_cpu_len", 0)),
        "peak_rss_mb": round(rss_kib / 1024, 1),
        "stopped": stopped,
        "artifacts": [str(Path(a).relative_to(REPO)) if a.startswith(str(REPO)) else a for a in libfuzzer_artifacts],
    }


# ---- what goes into git ------------------------------------------------------------------------------------------

LOCAL = FUZZ_DIR / "corpus-local"  # git-ignored: inputs kept on this machine only
KEEP_MAX = 64 * 1024  # larger inputs stay local (the corpus in git stays small)
_WINDOW = 64
_DERIVED_BYTES = 256
_sample_windows: dict[str, set[bytes]] = {}


def local_dir(name: str) -> Path:
    return LOCAL / name


def _windows(name: str) -> set[bytes]:
    if name not in _sample_windows:
        found: set[bytes] = set()
        for path in sample_files(name):
            data = path.read_bytes()
            for off in range(0, len(data) - _WINDOW + 1, _WINDOW):
                piece = data[off : off + _WINDOW]
                if len(set(piece)) >= 16:  # not padding, zeros or a run of one character
                    found.add(piece)
        if found:  # content our own factory writes too (boilerplate, namespaces) is not sample content
            from tests.fuzz.seeds import BUILDERS, NEEDS_WORKDIR

            if name not in NEEDS_WORKDIR:
                for data in BUILDERS[name]().values():
                    found.difference_update(data[i : i + _WINDOW] for i in range(len(data) - _WINDOW + 1))
        _sample_windows[name] = found
    return _sample_windows[name]


def derived_from_samples(name: str, data: bytes) -> bool:
    """Whether an input holds real-sample content (at least 256 bytes of 64-byte pieces of a sample file):
    those are not copied into the repo (samples are read at run time only)."""
    windows = _windows(name)
    if not windows:
        return False
    matched = 0
    i = 0
    while i <= len(data) - _WINDOW:
        if data[i : i + _WINDOW] in windows:
            matched += _WINDOW
            if matched >= _DERIVED_BYTES:
                return True
            i += _WINDOW
        else:
            i += 1
    return False


def sort_corpus(name: str) -> int:
    """Move inputs that must not go into git (too large, or derived from the real samples) from the kept corpus
    to the local one; how many moved."""
    moved = 0
    for path in inputs(corpus_dir(name)):
        data = path.read_bytes()
        if len(data) > KEEP_MAX or derived_from_samples(name, data):
            local_dir(name).mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), local_dir(name) / path.name)
            moved += 1
    return moved


def merge(name: str) -> tuple[int, int]:
    """Minimise the kept and local corpora (libFuzzer -merge=1), then sort them again; (files before, after)."""
    kept = corpus_dir(name)
    local = local_dir(name)
    before = len(inputs(kept)) + len(inputs(local))
    if before == 0:
        return 0, 0
    fresh = Path(tempfile.mkdtemp(prefix=f"fuzz-merge-{name}-"))
    artifacts = ARTIFACTS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    env = _env()
    env["VMR_FUZZ_KEEP_GOING"] = "1"
    args = [
        _python(), "-m", "tests.fuzz", "worker", name, str(fresh), str(kept), *([str(local)] if local.is_dir() else []),
        "-merge=1",
        f"-timeout={LIBFUZZER_TIMEOUT}", f"-rss_limit_mb={RSS_LIMIT_MB}", f"-max_len={TARGETS[name].max_len}",
        f"-artifact_prefix={artifacts}/",
    ]  # fmt: skip
    code, _ = _spawn(args, env=env, log=artifacts / "last-merge.log")
    after = inputs(fresh)
    if code == 0 and after:
        for p in inputs(kept) + inputs(local):
            p.unlink()
        for p in after:
            shutil.move(str(p), kept / p.name)
    shutil.rmtree(fresh, ignore_errors=True)
    sort_corpus(name)
    return before, len(inputs(kept)) + len(inputs(local))


def replay(name: str, *, quarantine: bool = False) -> list[tuple[Path, str]]:
    """Every kept and regression input through the contract (determinism checked on each); failures listed.
    With ``quarantine``, failing corpus inputs (known open bugs) move to the artifacts folder."""
    contract = Contract(TARGETS[name], determinism_every=1, hang_seconds=float("inf"), track_memory=True)
    failures = []
    for path in inputs(corpus_dir(name)) + inputs(local_dir(name)) + inputs(regressions_dir(name)):
        try:
            contract(path.read_bytes())
        except Exception as exc:
            failures.append((path, _crash_signature(exc)))
            if quarantine and path.parent in (corpus_dir(name), local_dir(name)):
                dest = ARTIFACTS / name / f"quarantined-{path.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), dest)
    return failures


def cover(name: str) -> dict[str, Any]:
    """Coverage of the target's modules over its kept corpus (plus the sample seeds), in a child process."""
    env = _env()
    log = ARTIFACTS / name / "last-cover.json"
    log.parent.mkdir(parents=True, exist_ok=True)
    code, _ = _spawn([_python(), "-m", "tests.fuzz", "_cover", name, str(log)], env=env, log=log.with_suffix(".log"))
    if code != 0 or not log.is_file():
        return {"error": f"coverage run failed (exit {code}); see {log.with_suffix('.log')}"}
    return json.loads(log.read_text())


def _cover_child(name: str, out: Path) -> None:
    import coverage

    target = TARGETS[name]
    files = [str(REPO / m) for m in target.modules]
    cov = coverage.Coverage(branch=True, include=files, data_file=None)
    contract = Contract(target, determinism_every=0, hang_seconds=float("inf"))
    cov.start()
    for path in inputs(corpus_dir(name)) + inputs(local_dir(name)) + inputs(regressions_dir(name)) + sample_files(name):
        with contextlib.suppress(Exception):  # crash inputs are reported by replay, not here
            contract(path.read_bytes())
    cov.stop()
    result: dict[str, Any] = {"files": {}}
    totals = [0, 0, 0, 0]
    for f in files:
        analysis = cov._analyze(f)
        nums = analysis.numbers
        lines = (nums.n_statements - nums.n_missing, nums.n_statements)
        branches = (nums.n_branches - nums.n_missing_branches, nums.n_branches)
        result["files"][str(Path(f).relative_to(REPO))] = {"lines": lines, "branches": branches}
        totals = [totals[0] + lines[0], totals[1] + lines[1], totals[2] + branches[0], totals[3] + branches[1]]
    result["lines"] = totals[:2]
    result["branches"] = totals[2:]
    out.write_text(json.dumps(result))


def _pct(pair: list[int] | tuple[int, int]) -> str:
    return f"{100 * pair[0] / pair[1]:.0f}% ({pair[0]}/{pair[1]})" if pair and pair[1] else "n/a"


def corpus_size(name: str) -> tuple[int, int]:
    files = inputs(corpus_dir(name))
    return len(files), sum(p.stat().st_size for p in files)


# ---- tally and report --------------------------------------------------------------------------------------------


def load_tally() -> dict[str, Any]:
    if TALLY.is_file():
        return json.loads(TALLY.read_text())
    return {"targets": {}, "runs": []}


@contextlib.contextmanager
def tally_locked() -> Iterator[None]:
    """Two runs on disjoint targets (one per core) may finish a target at the same moment: the tally's
    read-modify-write and the report rewrite are serialised with a lock file next to the tally."""
    with open(TALLY.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def add_to_tally(result: dict[str, Any], coverage: dict[str, Any]) -> None:
    with tally_locked():
        _add_to_tally(result, coverage)
        write_report()


def _add_to_tally(result: dict[str, Any], coverage: dict[str, Any]) -> None:
    tally = load_tally()
    t = tally["targets"].setdefault(
        result["target"],
        {"execs": 0, "seconds": 0.0, "runs": 0, "crashes": 0, "hangs": 0, "ooms": 0, "peak_rss_mb": 0.0},
    )
    t["execs"] += result["execs"]
    t["seconds"] = round(t["seconds"] + result["seconds"], 1)
    t["runs"] += 1
    t["crashes"] += result["crashes"]
    t["hangs"] += result["hangs"]
    t["ooms"] += result["ooms"]
    t["peak_rss_mb"] = max(t["peak_rss_mb"], result["peak_rss_mb"])
    t["max_cpu_s"] = max(t.get("max_cpu_s", 0.0), result["max_cpu_s"])
    t["last_execs_per_s"] = result["execs_per_s"]
    kinds = t.setdefault("crash_kinds", {})
    for k, n in result["crash_kinds"].items():
        kinds[k] = kinds.get(k, 0) + n
    if "lines" in coverage:
        t["coverage"] = {"lines": coverage["lines"], "branches": coverage["branches"]}
    t["corpus_files"], t["corpus_bytes"] = corpus_size(result["target"])
    tally["runs"].append(
        {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{k: result[k] for k in ("target", "seconds", "execs", "execs_per_s", "crashes", "hangs", "peak_rss_mb")},
        }
    )
    TALLY.write_text(json.dumps(tally, indent=1, sort_keys=True) + "\n")


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") if os.path.exists("/proc/cpuinfo") else open(os.devnull) as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    if os.path.exists("/proc/meminfo"):
        first = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        mem = f", {int(first.split()[1]) // 1024 // 1024 + 1} GiB RAM"
    atheris_version = "?"
    try:
        from importlib.metadata import version

        atheris_version = version("atheris")
    except Exception:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, atheris {atheris_version}"
    )


def write_report() -> None:
    tally = load_tally()
    rows = []
    total_bytes = 0
    for name in TARGETS:
        t = tally["targets"].get(name)
        files, size = corpus_size(name)
        total_bytes += size
        if t is None:
            rows.append(f"| `{name}` | 0 | – | – | – | – | – | – | – | {files} files, {size / 1024:.0f} KiB |")
            continue
        cov = t.get("coverage", {})
        rate = t.get("last_execs_per_s", 0) or 0
        left = max(0, CAMPAIGN - t["execs"])
        eta = "done" if not left else (f"{left / rate / 60:.0f} min" if rate else "?")
        rows.append(
            f"| `{name}` | {t['execs']:,} | {rate:,.0f} | {eta} | {t['crashes']} | {t['hangs']} | "
            f"{t.get('max_cpu_s', 0):.3f} | {t['peak_rss_mb']:.0f} | {_pct(cov.get('lines', []))} / "
            f"{_pct(cov.get('branches', []))} | {files} files, {size / 1024:.0f} KiB |"
        )
    findings = tally.get("findings", {})  # "target signature" -> what became of it (written by hand)
    kinds = []
    for name in TARGETS:
        for sig, n in sorted(tally["targets"].get(name, {}).get("crash_kinds", {}).items()):
            status = findings.get(f"{name} {sig}", "open")
            kinds.append(f"- `{name}`: `{sig}` ({n}×): {status}")
    entries = "\n".join(f"| `{t.name}` | {t.entry} | {t.errors_doc} |" for t in TARGETS.values())
    text = f"""# Fuzzing results

Coverage-guided fuzzing (atheris/libFuzzer) of every parser, one target per parser: `tests/fuzz/targets.py`
(entry points and documented error types there and in `python -m tests.fuzz --help`). Run with
`./dev fuzz [TARGET] [--seconds N]` (niced, one fuzzing process at a time); every run adds to
`tests/fuzz/tally.json`, from which this file is written.

Machine: {machine()}.
Last written: {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}.

Contract per input: only the documented error type escapes; CPU time per input ≤ 1 s for inputs < 1 MiB (and
libFuzzer `-timeout={LIBFUZZER_TIMEOUT}`); `-rss_limit_mb={RSS_LIMIT_MB}` and a {ADDRESS_SPACE >> 30} GiB address-space
cap; every 64th input parsed twice with equal results.

| target | executions (all runs) | exec/s (last run) | to 1,000,000 | crashes | hangs | max CPU s / input \
| peak RSS MiB | coverage lines / branches | kept corpus |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Kept corpus total: {total_bytes / 1024 / 1024:.2f} MiB. Crashes are counted per input (the worker keeps fuzzing
after a crash and saves one input per distinct signature to `tests/fuzz/artifacts/<target>/`).

Crash signatures seen (exception@innermost harness frame; line numbers as of the run):

{chr(10).join(kinds) if kinds else "- none"}
{"".join(chr(10) + "- " + note for note in tally.get("notes", []))}

## Targets

| target | entry point fuzzed | documented error type (what may escape) |
|---|---|---|
{entries}

Image targets take raw bytes or a sparse input (`SPRS`, a name selector, a size up to 64 MiB, and (offset, bytes)
chunks), so seeds hold only the non-zero sectors of a real VHDX or NTFS volume. Parent lookups of the container
target and secret files of the target-file target are confined to a tmpfs sandbox by an audit hook (an open
outside it is refused); a socket or a process started by any sandboxed target is a crash.
"""
    REPORT.write_text(text)


# ---- commands -----------------------------------------------------------------------------------------------------


def _names(given: list[str]) -> list[str]:
    unknown = [n for n in given if n not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown fuzz target(s) {unknown}; targets: {', '.join(TARGETS)}")
    return given or list(TARGETS)


def cmd_run(names: list[str], seconds: int, *, do_merge: bool) -> int:
    print(f"fuzz: {len(names)} target(s), {seconds} s each; artefacts in {ARTIFACTS.relative_to(REPO)}/")
    header = (
        f"{'target':<11} {'execs':>9} {'exec/s':>8} {'crashes':>7} {'hangs':>5} {'max s/input':>11} "
        f"{'peak RSS':>9} {'lines':>17} {'branches':>17} {'corpus':>14}"
    )
    print(header)
    bad = 0
    for name in names:
        result = fuzz_one(name, seconds)
        if do_merge:
            merge(name)
        else:
            sort_corpus(name)
        failures = replay(name, quarantine=True)
        coverage = cover(name)
        add_to_tally(result, coverage)
        files, size = corpus_size(name)
        print(
            f"{name:<11} {result['execs']:>9,} {result['execs_per_s']:>8,.0f} {result['crashes']:>7} "
            f"{result['hangs']:>5} {result['max_cpu_s']:>11.3f} {result['peak_rss_mb']:>7.0f}MB "
            f"{_pct(coverage.get('lines', [])):>17} {_pct(coverage.get('branches', [])):>17} "
            f"{files:>5} {size / 1024:>6.0f}KiB",
            flush=True,
        )
        for sig, n in result["crash_kinds"].items():
            print(f"    crash {sig} ×{n}")
        if result["stopped"]:
            print(f"    stopped early: {result['stopped']} (log: {ARTIFACTS.relative_to(REPO)}/{name}/last-run.log)")
        for path, sig in failures:
            print(f"    replay failure {sig}: {path.name} (quarantined)")
        bad += bool(result["crashes"] or result["hangs"] or result["ooms"])
    print(f"fuzz: tally {TALLY.relative_to(REPO)}, report {REPORT.relative_to(REPO)}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        worker(argv[1:])
        return 0
    if argv and argv[0] == "_cover":
        _cover_child(argv[1], Path(argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("command", choices=["run", "seeds", "merge", "replay", "cover", "report", "list"])
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--no-merge", action="store_true", help="run: do not minimise the corpus afterwards")
    args = parser.parse_args(argv)
    names = _names(args.targets)
    if args.command == "run":
        return cmd_run(names, args.seconds, do_merge=not args.no_merge)
    if args.command == "seeds":
        from tests.fuzz.seeds import build_all

        build_all(names)
        return 0
    if args.command == "merge":
        for name in names:
            before, after = merge(name)
            print(f"{name}: {before} -> {after} files")
        return 0
    if args.command == "replay":
        bad = 0
        for name in names:
            failures = replay(name)
            files, _ = corpus_size(name)
            print(f"{name}: {files} kept + {len(inputs(regressions_dir(name)))} regression inputs, "
                  f"{len(failures)} failing")  # fmt: skip
            for path, sig in failures:
                print(f"    {sig}: {path}")
            bad += bool(failures)
        return 1 if bad else 0
    if args.command == "cover":
        for name in names:
            c = cover(name)
            print(f"{name}: lines {_pct(c.get('lines', []))}, branches {_pct(c.get('branches', []))}")
        return 0
    if args.command == "list":
        for t in TARGETS.values():
            print(f"{t.name}: {t.entry}\n    errors: {t.errors_doc}")
        return 0
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
