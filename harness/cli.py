"""``vmrole``: the harness for people who would rather not know it is pytest underneath.

Exit codes (pytest's): 0 no finding at or above --fail-on; 1 findings at or above it; 2 interrupted;
3 internal error; 4 usage error (bad option, waivers or baseline file); 5 nothing to lint.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import NoReturn

from harness import __version__
from harness.readers.image.blob import is_blob_url

REPORT_DIR = "reports"
#: pytest.ExitCode.USAGE_ERROR: pytest itself (0.2 s of imports) is imported once `vmrole lint` has started reading
#: the images it names, so that their readers start that much sooner
USAGE_ERROR = 4


def _lint_ini() -> str:
    return str(resources.files("harness") / "data" / "lint.ini")


#: `vmrole lint -n`: what it spreads and how (README, "Several processes")
LINT_WORKERS_HELP = (
    "how many images are read at once, each in its own isolated reader process: auto (the default: one per core; "
    "VMROLE_IMAGE_READERS=N sets another default), a number, or 0 for a serial run (one image at a time, "
    "nothing read ahead); each image is read once and the rules run in this process (pytest-xdist only if "
    "forced after --: `-- -n N`)"
)
PROBE_WORKERS_HELP = "run in N processes (pytest-xdist; auto: one per core); each image is still read once"


def _add_lint_options(p: argparse.ArgumentParser, workers_help: str = LINT_WORKERS_HELP) -> None:
    p.add_argument("--package", action="append", default=[], metavar="CSPKG", help="a .cspkg to lint")
    p.add_argument("--csdef", metavar="CSDEF", help="the .csdef to pair with every .cscfg")
    p.add_argument("--cscfg", action="append", default=[], metavar="CSCFG", help="a .cscfg to lint")
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="a disk image under any file name (VHD, VHDX or raw: the format is read from its bytes), or its URL "
        "in Azure blob storage (https://ACCOUNT.blob.core.windows.net/C/B?{env:SAS}, azure://ACCOUNT/C/B)",
    )
    p.add_argument(
        "--profile", choices=("auto", "vmrole", "azure"), help="image rule profile (default auto: chosen and reported)"
    )
    p.add_argument("--role", metavar="NAME", help="the role of the service model an image is deployed as")
    p.add_argument(
        "--image-parent-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory a differencing image's parent may be opened from, besides the child's own (repeatable)",
    )
    p.add_argument("--signatures", action="append", default=[], metavar="YAML", help="extra IC/agent signatures")
    p.add_argument("--select", action="append", default=[], metavar="RULES", help="ids, prefixes or names")
    p.add_argument("--ignore", action="append", default=[], metavar="RULES", help="ids, prefixes or names")
    p.add_argument("--severity", action="append", default=[], metavar="RULE=SEV", help="override a severity")
    p.add_argument("--fail-on", metavar="SEVERITY", help="lowest severity that fails (default high)")
    p.add_argument("--waivers", metavar="FILE", help="YAML waivers (justification + expiry required)")
    p.add_argument("--baseline", metavar="FILE", help="skip findings listed in this baseline")
    p.add_argument("--create-baseline", action="store_true", help="write all findings to --baseline")
    p.add_argument("--report-dir", default=REPORT_DIR, metavar="DIR", help="where reports go (default reports)")
    p.add_argument("--format", action="append", default=[], metavar="FMT", help="sarif, json, html (default all)")
    p.add_argument("--no-junit", action="store_true", help="do not write DIR/junit.xml")
    p.add_argument("--no-allure", action="store_true", help="do not write DIR/allure-results")
    p.add_argument("--config", metavar="INI", help="a pytest ini file with vmr_* keys (default: none)")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="lint only shard I of N (CI matrices): a stable split by path, a csdef/cscfg/cspkg set or an image "
        "never split; merge the shards' vmrole.json with `vmrole report merge`",
    )
    p.add_argument(
        "-n",
        "--workers",
        metavar="N",
        help=workers_help,
    )
    p.add_argument("-q", "--quiet", action="count", default=0)
    p.add_argument("-v", "--verbose", action="count", default=0)


def lint_args(ns: argparse.Namespace, paths: list[str], extra: list[str]) -> list[str]:
    """The pytest command line for a lint run."""
    args: list[str] = [*paths, "--vmr-discover", "--noconftest", "--rootdir", os.getcwd()]
    args += ["-c", ns.config or _lint_ini()]
    for p in ns.package:
        args += ["--vmr-package", p]
    if ns.csdef:
        args += ["--vmr-csdef", ns.csdef]
    for p in ns.cscfg:
        args += ["--vmr-cscfg", p]
    for p in ns.image:
        args += ["--vmr-image", p]
    for p in ns.signatures:
        args += ["--vmr-signatures", p]
    if ns.profile:
        args += ["--vmr-image-profile", ns.profile]
    if ns.role:
        args += ["--vmr-role", ns.role]
    for d in ns.image_parent_dir:
        args += ["--vmr-image-parent-dir", d]
    for flag, values in (("--vmr-select", ns.select), ("--vmr-ignore", ns.ignore), ("--vmr-severity", ns.severity)):
        for v in values:
            args += [flag, v]
    if ns.fail_on:
        args += ["--vmr-fail-on", ns.fail_on]
    if ns.waivers:
        args += ["--vmr-waivers", ns.waivers]
    if ns.baseline:
        args += ["--vmr-baseline", ns.baseline]
    if ns.create_baseline:
        args.append("--vmr-create-baseline")
    if ns.shard:
        args += ["--vmr-shard", ns.shard]
    report_dir = Path(ns.report_dir)
    args += ["--vmr-report-dir", str(report_dir)]
    for fmt in ns.format:
        args += ["--vmr-report", fmt]
    if not ns.no_junit:
        args += ["--junitxml", str(report_dir / "junit.xml"), "-o", "junit_family=xunit2"]
    if not ns.no_allure:
        args += ["--alluredir", str(report_dir / "allure-results"), "--clean-alluredir"]
    if ns.workers and getattr(ns, "target", None):
        # A probe keeps a target's items on one worker (stages run once per process). A lint spreads its image
        # reads instead (cmd_lint): its rule items cost less than xdist's shipping of their results.
        args += ["-n", ns.workers, "--dist", "loadfile"]
    verbosity = ns.verbose - ns.quiet
    if verbosity > 0:
        args.append("-" + "v" * verbosity)
    elif verbosity < 0:
        args.append("-" + "q" * -verbosity)
    else:
        args.append("-rfs")
    return args + extra


def cmd_lint(ns: argparse.Namespace, extra: list[str]) -> int:
    named = [*ns.package, *ns.cscfg, *ns.image, *([ns.csdef] if ns.csdef else [])]
    if not (ns.paths or named):
        print("vmrole lint: name at least one file or directory to lint", file=sys.stderr)
        return USAGE_ERROR
    for p in [*ns.paths, *named]:
        if p in ns.image and is_blob_url(p):
            continue  # an image in blob storage: the plugin checks the URL and resolves its SAS
        if not Path(p).exists():
            print(f"vmrole lint: {p}: no such file or directory", file=sys.stderr)
            return USAGE_ERROR
    if any(arg == "--vmr-target" or arg.startswith("--vmr-target=") for arg in extra):
        print(
            "vmrole lint: linting never probes a deployment: use `vmrole probe TARGET` (it takes the same lint "
            "options) or `pytest --vmr-target TARGET`",
            file=sys.stderr,
        )
        return USAGE_ERROR
    if ns.shard:
        from harness.shards import Shard

        try:
            Shard.parse(ns.shard)
        except ValueError as exc:
            print(f"vmrole lint: --shard: {exc}", file=sys.stderr)
            return USAGE_ERROR
    # Without positional paths pytest would collect the whole working directory: name the artefacts.
    paths = ns.paths or named
    if any(p in ns.image and is_blob_url(p) for p in paths):
        import pytest

        from harness.plugin.blobimages import placeholder

        try:  # a blob image is collected as its placeholder file (the plugin maps --vmr-image URL to the same)
            paths = [str(placeholder(p)) if p in ns.image and is_blob_url(p) else p for p in paths]
        except pytest.UsageError as exc:
            print(f"vmrole lint: {exc}", file=sys.stderr)
            return USAGE_ERROR
    try:
        readers = _readers(ns.workers)
    except ValueError:
        print(f"vmrole lint: -n: expected auto, 0 (serial) or a number of readers, got {ns.workers!r}", file=sys.stderr)
        return USAGE_ERROR
    readers_set = False
    if ns.workers is not None:
        if _has_images(ns, paths):
            from harness.extraction.worker import set_readers

            set_readers(readers)
            readers_set = True
        elif readers != 0:
            print(
                f"vmrole lint: -n {ns.workers}: service models only, linted in one process (-n sets how many images "
                "are read at once): their rule items take about a millisecond each, less than shipping each result "
                "between processes costs; to force pytest-xdist anyway pass it after `--`: `-- -n N`"
            )
    _prefetch_images(ns, paths)
    import pytest

    # Nor from the environment or an ini file (--config): a lint run contacts nothing (issue 9).
    args = [*lint_args(ns, paths, extra), "-o", "vmr_target="]
    saved = os.environ.pop("VMR_TARGET", None)
    scratch = None
    if _forces_xdist(extra):
        # xdist makes the controller create pytest's numbered temp folder, and at exit pytest then deletes the
        # older numbered folders of every other pytest run of this user (tens of thousands of files on a busy
        # machine, seconds of the lint's time): the workers get a private folder instead, removed here.
        import tempfile

        scratch = tempfile.mkdtemp(prefix="vmrole-lint-")
        args += ["--basetemp", os.path.join(scratch, "tmp")]
    try:
        return int(pytest.main(args, plugins=[_FreezeAfterCollection()]))
    finally:
        if not _EXITING:  # cli.main called in a process that goes on: what was frozen may be collected again
            gc.unfreeze()
        if saved is not None:
            os.environ["VMR_TARGET"] = saved
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
        if readers_set:
            from harness.extraction.worker import set_readers

            set_readers(None)


class _FreezeAfterCollection:
    """After collection a lint run only runs its rule items, writes its reports and ends: what collection built
    (facts, items, the imported modules) is not garbage, so the cyclic collector stops walking it (``gc.freeze``).
    That saves the collections during the run, pytest's own ``gc.collect()`` at its end, and the interpreter's
    last one at exit: about 0.3 s of the serial tail of a run over 8 images (bench/RESULTS.md)."""

    @staticmethod
    def pytest_collection_finish(session: object) -> None:
        gc.freeze()


#: Set by :func:`run` (the `vmrole` command): the process ends after the command, nothing frozen is unfrozen.
_EXITING = False


def _readers(workers: str | None) -> int | None:
    """`vmrole lint -n`: how many images to read at once; None for the default (auto: one per core)."""
    if workers is None or workers == "auto":
        return None
    if not (workers.isascii() and workers.isdigit()):
        raise ValueError(workers)
    return int(workers)


def _forces_xdist(extra: list[str]) -> bool:
    """pytest-xdist asked for after `--` (`-- -n N`), with no temp folder of the caller's."""
    wants = any(a in ("-n", "--numprocesses") or a.startswith(("-n", "--numprocesses=")) for a in extra)
    return wants and not any(a == "--basetemp" or a.startswith("--basetemp=") for a in extra)


def _has_images(ns: argparse.Namespace, paths: list[str]) -> bool:
    """Whether the run lints an image: named with --image, or an image file named or found in a named folder."""
    from fnmatch import fnmatch

    from harness.engine.artefact import IMAGE, kind_of
    from harness.lint import NORECURSE

    if ns.image:
        return True
    for name in paths:
        path = Path(name)
        if path.is_file() and kind_of(path) == IMAGE:
            return True
        for folder, dirs, files in os.walk(path) if path.is_dir() else ():
            dirs[:] = [d for d in dirs if not any(fnmatch(d, pattern) for pattern in NORECURSE)]
            if any(kind_of(Path(folder, f)) == IMAGE for f in files):
                return True
    return False


def _prefetch_images(ns: argparse.Namespace, paths: list[str]) -> None:
    """Start reading the named images now, so that reading overlaps pytest's start-up (the plugin then takes
    the result; with other options than these it reads again)."""
    from harness.engine.artefact import IMAGE, kind_of

    named = set(ns.image)  # --image takes any file name: the readers tell the format from the bytes
    images = [
        p for p in dict.fromkeys([*ns.image, *paths]) if (p in named or kind_of(Path(p)) == IMAGE) and Path(p).is_file()
    ]
    if ns.shard:  # only this shard's images (the plugin keys them the same way: root = the working directory)
        from harness.shards import Shard, set_key
        from harness.subjects import Pairing

        shard = Shard.parse(ns.shard)
        anchors = [Path(os.path.abspath(p)) for p in paths]
        images = [p for p in images if shard.holds(set_key(Path(p), Pairing(), Path(os.getcwd()), anchors))]
    if not images:
        return  # a service-model lint does not pay for importing the image readers
    from harness.extraction.options import ExtractOptions
    from harness.extraction.worker import prefetch

    options = ExtractOptions(
        signature_files=tuple(os.path.abspath(os.path.expanduser(p)) for p in ns.signatures),
        parent_dirs=tuple(os.path.abspath(os.path.expanduser(d)) for d in ns.image_parent_dir),
    )
    for p in images:
        prefetch(Path(p), options)


def cmd_probe(ns: argparse.Namespace, extra: list[str]) -> int:
    if not Path(ns.target).is_file():
        print(f"vmrole probe: {ns.target}: no such target file", file=sys.stderr)
        return USAGE_ERROR
    # Named with --vmr-target: the only way a target is probed. Also named as the one path to collect, and
    # absolute so the plugin sees one path (a relative one would be collected twice).
    target = os.path.abspath(ns.target)
    import pytest

    args = [*lint_args(ns, [target], extra), "--vmr-target", target]
    if ns.destructive:
        args.append("--vmr-destructive")
    if ns.allow_cleartext_credentials:
        args.append("--vmr-allow-cleartext-credentials")
    return int(pytest.main(args))


def cmd_rules(ns: argparse.Namespace) -> int:
    from harness.docs import rules_json, rules_markdown, rules_text

    if ns.docs:
        return _write_rule_docs(Path(ns.docs), check=ns.check)
    if ns.check:
        print("vmrole rules: --check goes with --docs DIR", file=sys.stderr)
        return USAGE_ERROR
    if ns.update_readme:
        from harness.docs import update_readme

        readme = Path(ns.update_readme)
        readme.write_text(update_readme(readme.read_text("utf-8")), "utf-8")
        print(f"vmrole rules: updated the generated tables in {readme}")
    elif ns.format == "markdown":
        sys.stdout.write(rules_markdown())
    elif ns.format == "json":
        json.dump(rules_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif ns.rule:
        from harness.docs import rule_doc

        try:
            sys.stdout.write(rule_doc(ns.rule))
        except KeyError:
            print(f"vmrole rules: no rule matches {ns.rule!r}", file=sys.stderr)
            return USAGE_ERROR
    else:
        sys.stdout.write(rules_text())
    return 0


def _write_rule_docs(directory: Path, *, check: bool) -> int:
    """``vmrole rules --docs DIR [--check]``: write the rule pages, or (--check) exit 1 when they are stale."""
    from harness.docs import stale_rule_pages, write_rule_pages

    if check:
        stale = stale_rule_pages(directory)
        for name in stale:
            print(f"vmrole rules: {directory / name} is stale", file=sys.stderr)
        if stale:
            print(f"vmrole rules: regenerate with `vmrole rules --docs {directory}`", file=sys.stderr)
            return 1
        print(f"vmrole rules: the rule pages in {directory} are current")
        return 0
    try:
        changed = write_rule_pages(directory)
    except FileExistsError as exc:
        print(f"vmrole rules: {exc}", file=sys.stderr)
        return USAGE_ERROR
    print(f"vmrole rules: {len(changed)} file(s) of the rule pages in {directory} written or removed")
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from harness.demo import run_demo

    return run_demo(Path(ns.work_dir), Path(ns.report_dir), live=not ns.no_live)


def cmd_report(ns: argparse.Namespace) -> int:
    from harness.reports.merge import MergeError, merge_reports

    try:
        written, exit_code, summary = merge_reports([Path(p) for p in ns.reports], Path(ns.report_dir))
    except MergeError as exc:
        print(f"vmrole report merge: {exc}", file=sys.stderr)
        return USAGE_ERROR
    print(f"vmrole report merge: {summary}")
    for name, path in sorted(written.items()):
        print(f"{name} report: {path}")
    return exit_code


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad option; here 2 means interrupted and a usage error is 4 (README, exit codes).
    Sub-commands' parsers are of the same class (add_subparsers uses the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(4, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vmrole", description="vmrole-harness: lint and test Windows Azure VM roles")
    parser.add_argument("--version", action="version", version=f"vmrole-harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    lint = sub.add_parser(
        "lint",
        help="lint disk images and service models (.vhd, .vhdx, .raw, .csdef, .cscfg, .cspkg)",
        description="Lint files or directories. Linting reads files and contacts nothing: target files "
        "(*.vmrtarget.yml) are probed only by `vmrole probe`. Arguments after `--` go to pytest unchanged.",
    )
    lint.add_argument("paths", nargs="*", help="files or directories to lint")
    _add_lint_options(lint)

    probe = sub.add_parser(
        "probe",
        help="run the live suites against a deployment target (*.vmrtarget.yml)",
        description="Probe a live deployment described by a target file (`vmrole fabric up` writes one for "
        "the local fabric). Destructive probes (reimage, reboot, taking an instance Busy) run only with "
        "--destructive. Arguments after `--` go to pytest unchanged.",
    )
    probe.add_argument("target", help="the target file, e.g. .vmrole/fabric/target.vmrtarget.yml")
    probe.add_argument("--destructive", action="store_true", help="also reimage, reboot and drain an instance")
    probe.add_argument(
        "--allow-cleartext-credentials",
        action="store_true",
        help="probe even when the target would send a credential in clear (HTTP Basic or a shared access "
        "signature over plain http); refused otherwise",
    )
    _add_lint_options(probe, PROBE_WORKERS_HELP)

    rules = sub.add_parser(
        "rules", help="list the rule catalogue, show one rule's documentation, or write the rule pages (--docs)"
    )
    rules.add_argument("rule", nargs="?", help="a rule id or name to document")
    rules.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    rules.add_argument("--update-readme", metavar="README", help="rewrite the generated tables in README")
    rules.add_argument(
        "--docs",
        metavar="DIR",
        help="write one Markdown page per rule and an index (README.md) into DIR, e.g. docs/rules",
    )
    rules.add_argument("--check", action="store_true", help="with --docs: exit 1 if the pages in DIR are stale")

    report = sub.add_parser("report", help="work with reports: `vmrole report merge` joins the shards' reports")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    merge = report_sub.add_parser(
        "merge",
        help="merge the vmrole.json reports of CI shards into one SARIF, HTML, JUnit XML and JSON",
        description="Read the JSON reports of several `vmrole lint --shard I/N` runs (validated against the "
        "report schema; same tool version, fail-on and rule definitions) and write one vmrole.sarif, "
        "vmrole.html, junit.xml and vmrole.json into --report-dir, the verdict recomputed from the merged "
        "findings. Exit 0 pass, 1 findings at or above fail-on, 4 a malformed or mismatching report "
        "(nothing written).",
    )
    merge.add_argument("reports", nargs="+", metavar="REPORT", help="the shards' vmrole.json files")
    merge.add_argument("--report-dir", default=REPORT_DIR, metavar="DIR", help="where reports go (default reports)")

    from harness.fabric.cli import add_parser as add_fabric_parser

    add_fabric_parser(sub)

    demo = sub.add_parser(
        "demo", help="the main job on the built-in sample: build, lint, deploy to the local fabric, probe, report"
    )
    demo.add_argument("--work-dir", default=".vmrole/demo", help="where sample artefacts are built")
    demo.add_argument("--report-dir", default=REPORT_DIR, help="where reports go (default reports)")
    demo.add_argument("--no-live", action="store_true", help="lint only: do not deploy to the local fabric")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    ns = build_parser().parse_args(argv)
    if ns.command == "lint":
        return cmd_lint(ns, extra)
    if ns.command == "rules":
        return cmd_rules(ns)
    if ns.command == "probe":
        return cmd_probe(ns, extra)
    if ns.command == "report":
        return cmd_report(ns)
    if ns.command == "demo":
        return cmd_demo(ns)
    if ns.command == "fabric":
        from harness.fabric.cli import run as run_fabric

        return run_fabric(ns)
    return 2  # argparse already rejects unknown commands


def run() -> int:
    """The `vmrole` command: :func:`main`, in a process that ends after it."""
    global _EXITING
    _EXITING = True
    return main()


if __name__ == "__main__":
    sys.exit(run())
