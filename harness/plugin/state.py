"""The run's settings, resolved and validated once in pytest_configure (bad values are usage errors)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.engine import catalogue
from harness.engine.artefact import DEPLOYMENT, kind_of
from harness.engine.finding import Finding
from harness.engine.rule import Rule
from harness.engine.severity import Severity
from harness.plugin import options
from harness.plugin.baseline import BaselineError, load_baseline
from harness.plugin.waivers import Waiver, WaiverError, load_waivers
from harness.readers.image.blob import is_blob_url
from harness.reports.model import BASELINED, FAILED, REPORTED, WAIVED, FindingResult
from harness.shards import Shard
from harness.subjects import ImageSettings, Pairing

REPORT_FORMATS = ("sarif", "json", "html")


def _validate_image_files(signatures: tuple[str, ...], allowlists: tuple[str, ...]) -> None:
    """Bad signature or allowlist files are usage errors now, not failures deep in an image worker."""
    if signatures:
        from harness.facts.image_signatures import SignatureError, load_signatures

        try:
            load_signatures(signatures)
        except SignatureError as exc:
            raise pytest.UsageError(f"--vmr-signatures: {exc}") from None
    if allowlists:
        from harness.extraction.certs import AllowlistError, load_machine_key_allowlist

        try:
            load_machine_key_allowlist(allowlists)
        except AllowlistError as exc:
            raise pytest.UsageError(f"--vmr-machine-key-allowlist: {exc}") from None


def _not_probed(name: str) -> str:
    """Linting never contacts a deployment: a target file is probed only when named with --vmr-target."""
    return (
        f"{name} is a target file and was not probed (linting never contacts a deployment): "
        f"probe it with `vmrole probe {name}` or `pytest --vmr-target {name}`"
    )


@dataclass
class RunState:
    root: Path
    invocation_dir: Path
    rules: list[type[Rule]]
    fail_on: Severity
    severity_overrides: dict[str, Severity]
    today: dt.date
    waivers: list[Waiver]
    allow_secret_waivers: bool
    baseline: set[str]
    baseline_path: Path | None
    create_baseline: bool
    discover: bool
    pairing: Pairing
    explicit: set[Path]
    report_dir: Path | None
    report_formats: tuple[str, ...]
    destructive: bool = False
    allow_cleartext_credentials: bool = False
    #: --vmr-shard I/N: only this shard's artefacts are collected (None: all)
    shard: Shard | None = None
    # Shown in the terminal summary (controller side), even when nothing was collected.
    notes: list[str] = field(default_factory=list)

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: pytest.Config) -> RunState:
        inv = Path(config.invocation_params.dir)

        def path_of(value: str) -> Path:
            return Path(os.path.abspath(inv / os.path.expanduser(value)))

        try:
            fail_on = Severity.parse(options.get(config, "fail-on"))
        except ValueError as exc:
            raise pytest.UsageError(f"--vmr-fail-on: {exc}") from None

        all_rules = catalogue.all_rules()
        selectors = options.get(config, "select")
        ignores = options.get(config, "ignore")
        for flag, values in (("--vmr-select", selectors), ("--vmr-ignore", ignores)):
            for sel in values:
                if not any(r.matches(sel) for r in all_rules):
                    raise pytest.UsageError(f"{flag}: {sel!r} matches no rule (see `vmrole rules`)")
        rules = catalogue.select(selectors, ignores)

        overrides: dict[str, Severity] = {}
        for spec in options.get(config, "severity"):
            rule_sel, sep, sev = spec.partition("=")
            if not sep:
                raise pytest.UsageError(f"--vmr-severity: expected RULE=SEVERITY, got {spec!r}")
            matched = [r for r in all_rules if r.matches(rule_sel)]
            if not matched:
                raise pytest.UsageError(f"--vmr-severity: {rule_sel!r} matches no rule")
            try:
                level = Severity.parse(sev)
            except ValueError as exc:
                raise pytest.UsageError(f"--vmr-severity: {exc}") from None
            for rule in matched:
                overrides[rule.id] = level

        today_raw = options.get(config, "today")
        try:
            today = dt.date.fromisoformat(today_raw) if today_raw else dt.datetime.now(dt.UTC).date()
        except ValueError:
            raise pytest.UsageError(f"--vmr-today: expected YYYY-MM-DD, got {today_raw!r}") from None

        waivers: list[Waiver] = []
        waivers_opt = options.get(config, "waivers")
        if waivers_opt:
            try:
                waivers = load_waivers(path_of(waivers_opt))
            except WaiverError as exc:
                raise pytest.UsageError(str(exc)) from None

        baseline_opt = options.get(config, "baseline")
        create_baseline = options.get(config, "create-baseline")
        baseline_path = path_of(baseline_opt) if baseline_opt else None
        if create_baseline and baseline_path is None:
            raise pytest.UsageError("--vmr-create-baseline needs --vmr-baseline FILE to write to")
        baseline: set[str] = set()
        if baseline_path is not None and not create_baseline:
            try:
                baseline = load_baseline(baseline_path)
            except BaselineError as exc:
                raise pytest.UsageError(str(exc)) from None

        formats = tuple(f.lower() for f in options.get(config, "report")) or REPORT_FORMATS
        for fmt in formats:
            if fmt not in REPORT_FORMATS:
                raise pytest.UsageError(
                    f"--vmr-report: unknown format {fmt!r} (choose from {', '.join(REPORT_FORMATS)})"
                )
        report_dir_opt = options.get(config, "report-dir")

        profile = (options.get(config, "image-profile") or "auto").lower()
        if profile not in ("auto", "vmrole", "azure"):
            raise pytest.UsageError(f"--vmr-image-profile: expected auto, vmrole or azure, got {profile!r}")
        timeout_raw = options.get(config, "image-timeout")
        try:
            timeout = float(timeout_raw) if timeout_raw else 300.0
            if timeout <= 0:
                raise ValueError
        except ValueError:
            raise pytest.UsageError(
                f"--vmr-image-timeout: expected a positive number of seconds, got {timeout_raw!r}"
            ) from None
        extra_files = {
            flag: tuple(str(path_of(p)) for p in options.get(config, flag))
            for flag in ("signatures", "machine-key-allowlist")
        }
        for flag, paths in extra_files.items():
            for extra in paths:
                if not Path(extra).is_file():
                    raise pytest.UsageError(f"--vmr-{flag}: file not found: {extra}")
        _validate_image_files(extra_files["signatures"], extra_files["machine-key-allowlist"])
        parent_dirs = tuple(str(path_of(p)) for p in options.get(config, "image-parent-dir"))
        for parent_dir in parent_dirs:
            if not Path(parent_dir).is_dir():
                raise pytest.UsageError(f"--vmr-image-parent-dir: not a directory: {parent_dir}")
        image_settings = ImageSettings(
            profile=profile,
            role=options.get(config, "role") or None,
            signature_files=extra_files["signatures"],
            machine_key_allowlists=extra_files["machine-key-allowlist"],
            timeout=timeout,
            parent_dirs=parent_dirs,
        )

        csdef_opt = options.get(config, "csdef")
        pairing = Pairing(
            csdef=path_of(csdef_opt) if csdef_opt else None,
            packages=tuple(path_of(p) for p in options.get(config, "package")),
            cscfgs=tuple(path_of(p) for p in options.get(config, "cscfg")),
            targets=tuple(path_of(p) for p in options.get(config, "target")),
            images=tuple(_image_path(p, path_of) for p in options.get(config, "image")),
            image=image_settings,
        )
        declared = (*pairing.packages, *pairing.cscfgs, *pairing.targets, *pairing.images)
        for p in (*([pairing.csdef] if pairing.csdef else []), *declared):
            if not p.exists():
                raise pytest.UsageError(f"vmrole: artefact not found: {p}")
        explicit = set(declared)
        if pairing.csdef:
            explicit.add(pairing.csdef)
        notes: list[str] = []
        for arg in config.args:
            named = path_of(arg.split("::", 1)[0])
            explicit.add(named)
            if kind_of(named) == DEPLOYMENT and named not in pairing.targets:
                notes.append(_not_probed(arg.split("::", 1)[0]))

        shard_opt = options.get(config, "shard")
        try:
            shard = Shard.parse(shard_opt) if shard_opt else None
        except ValueError as exc:
            raise pytest.UsageError(f"--vmr-shard: {exc}") from None

        return cls(
            root=Path(config.rootpath),
            invocation_dir=inv,
            rules=rules,
            fail_on=fail_on,
            severity_overrides=overrides,
            today=today,
            waivers=waivers,
            allow_secret_waivers=options.get(config, "allow-secret-waivers"),
            baseline=baseline,
            baseline_path=baseline_path,
            create_baseline=create_baseline,
            discover=options.get(config, "discover"),
            pairing=pairing,
            explicit=explicit,
            report_dir=path_of(report_dir_opt) if report_dir_opt else None,
            report_formats=formats,
            destructive=options.get(config, "destructive"),
            allow_cleartext_credentials=options.get(config, "allow-cleartext-credentials"),
            shard=shard,
            notes=notes,
        )

    def option_paths(self) -> list[Path]:
        paths = [*self.pairing.packages, *self.pairing.cscfgs, *self.pairing.targets, *self.pairing.images]
        if self.pairing.csdef:
            paths.append(self.pairing.csdef)
        return paths

    # ---- judging findings ----------------------------------------------------------------
    def severity_of(self, rule: type[Rule]) -> Severity:
        return self.severity_overrides.get(rule.id, rule.severity)

    def dispose(self, rule: type[Rule], findings: list[Finding]) -> tuple[list[FindingResult], list[str]]:
        """Each finding's disposition in this run, plus notes (expired or refused waivers)."""
        results: list[FindingResult] = []
        notes: list[str] = []
        override = self.severity_overrides.get(rule.id)
        for finding in findings:
            if override is not None:
                finding = dataclasses.replace(finding, severity=override)
            if self.create_baseline:
                results.append(FindingResult(finding, BASELINED, f"added to baseline {self.baseline_path}"))
                continue
            if finding.fingerprint in self.baseline:
                results.append(FindingResult(finding, BASELINED, f"in baseline {self.baseline_path}"))
                continue
            waiver = self._waiver_for(rule, finding, notes)
            if waiver is not None:
                results.append(FindingResult(finding, WAIVED, waiver.justification, waiver.expires.isoformat()))
                continue
            disposition = FAILED if finding.severity >= self.fail_on else REPORTED
            results.append(FindingResult(finding, disposition))
        return results, notes

    def _waiver_for(self, rule: type[Rule], finding: Finding, notes: list[str]) -> Waiver | None:
        for waiver in self.waivers:
            if not waiver.covers(finding):
                continue
            label = f"waiver #{waiver.index} ({waiver.rule} on {waiver.target})"
            if waiver.expired(self.today):
                notes.append(f"{label} expired on {waiver.expires.isoformat()}: its findings are active again")
                continue
            if not rule.waivable and not self.allow_secret_waivers:
                notes.append(f"{label} not applied: {rule.id} is not waivable (--vmr-allow-secret-waivers)")
                continue
            return waiver
        return None


def _image_path(value: str, path_of: Callable[[str], Path]) -> Path:
    """An --vmr-image value: a file, or a blob URL (https://, http://, azure://) collected as its placeholder."""
    if is_blob_url(value):
        from harness.plugin.blobimages import placeholder

        return placeholder(value)
    return path_of(value)
