"""``--vmr-*`` options, each mirrored as an ini key (``vmr_*``) and an environment variable (``VMR_*``).

Precedence: command line, then environment, then ini file, then the built-in default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Option:
    name: str  # without the leading "--vmr-"
    help: str
    kind: str = "str"  # "str" | "list" | "bool"
    default: Any = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return f"--vmr-{self.name}"

    @property
    def dest(self) -> str:
        return "vmr_" + self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "VMR_" + self.name.replace("-", "_").upper()


OPTIONS: tuple[Option, ...] = (
    Option("package", "a .cspkg to lint (repeatable)", "list", metavar="PATH"),
    Option("csdef", "a ServiceDefinition .csdef to lint; also paired with every linted .cscfg", metavar="PATH"),
    Option("cscfg", "a ServiceConfiguration .cscfg to lint (repeatable)", "list", metavar="PATH"),
    Option(
        "image",
        "a disk image to lint offline, any file name: its format is read from its bytes; or its URL in Azure blob "
        "storage, read in place (https://ACCOUNT.blob.core.windows.net/C/B?{env:SAS}, azure://ACCOUNT/C/B) "
        "(repeatable)",
        "list",
        metavar="PATH",
    ),
    Option(
        "image-profile",
        "image rules to apply: vmrole (WS2008 R2 VM role), azure (today's generalized-image upload), or auto "
        "(chosen from the service model and the image; the choice is reported)",
        default="auto",
        metavar="PROFILE",
    ),
    Option("role", "the VirtualMachineRole of the service model an image is checked against", metavar="NAME"),
    Option("signatures", "extra integration-component / agent signature YAML files (repeatable)", "list"),
    Option("machine-key-allowlist", "extra machine-key allowlist YAML files (repeatable)", "list"),
    Option("image-timeout", "seconds an image may take to read before it is reported unreadable (default 300)"),
    Option(
        "image-parent-dir",
        "a directory a differencing image's parent may be opened from, besides the child's own directory "
        "(repeatable); a parent anywhere else is not opened",
        "list",
        metavar="DIR",
    ),
    Option(
        "target",
        "a deployment target file (*.vmrtarget.yml) to probe live (repeatable); the only way a target is "
        "probed: target files found in directories or named as arguments are not",
        "list",
        metavar="PATH",
    ),
    Option("destructive", "also run destructive live probes: reimage, reboot, taking an instance Busy", "bool", False),
    Option(
        "allow-cleartext-credentials",
        "probe a --vmr-target even when it would send a credential in clear (HTTP Basic over http, a shared "
        "access signature in an http URL); without it such a target is refused (VMR001)",
        "bool",
        False,
    ),
    Option(
        "discover",
        "also lint .csdef/.cscfg/.cspkg files found while collecting directories (files named on the "
        "command line are always linted)",
        "bool",
        False,
    ),
    Option("select", "only rules matching these ids, id prefixes or names (comma-separated)", "list"),
    Option("ignore", "skip rules matching these ids, id prefixes or names (comma-separated)", "list"),
    Option(
        "fail-on",
        "lowest severity that fails an item: critical, high, medium, low, info (default: high)",
        default="high",
        metavar="SEVERITY",
    ),
    Option("severity", "override a rule's severity: RULE=SEVERITY (repeatable, comma-separated)", "list"),
    Option("waivers", "YAML waivers file (rule, target, justification, expires)", metavar="FILE"),
    Option("allow-secret-waivers", "let waivers suppress rules marked not waivable (secrets)", "bool", False),
    Option("baseline", "baseline file: findings whose fingerprint is listed are skipped", metavar="FILE"),
    Option("create-baseline", "write every finding of this run to the --vmr-baseline file", "bool", False),
    Option("report-dir", "write SARIF, JSON and HTML reports to this directory", metavar="DIR"),
    Option("report", "report formats for --vmr-report-dir (default: sarif,json,html)", "list"),
    Option(
        "shard",
        "lint only shard I of N (e.g. 2/3): artefacts are split by a stable hash of their set's path relative to "
        "the root, a csdef/cscfg/cspkg set or an image never split; merge the shards' JSON reports with "
        "`vmrole report merge`",
        metavar="I/N",
    ),
    Option("today", "the date used for waiver and account expiry (YYYY-MM-DD; default: today, UTC)"),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("vmrole", "vmrole-harness: VM role / service model lint")
    for opt in OPTIONS:
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", default=None, dest=opt.dest, help=opt.help)
            parser.addini(opt.dest, opt.help, type="bool", default=opt.default)
        elif opt.kind == "list":
            group.addoption(opt.flag, action="append", default=None, dest=opt.dest, help=opt.help, metavar=opt.metavar)
            parser.addini(opt.dest, opt.help, type="linelist", default=[])
        else:
            group.addoption(opt.flag, action="store", default=None, dest=opt.dest, help=opt.help, metavar=opt.metavar)
            parser.addini(opt.dest, opt.help, type="string", default=opt.default or "")


def _split(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.replace("\n", ",").split(",") if part.strip())
    return out


def get(config: pytest.Config, name: str) -> Any:
    """The effective value of option ``name`` (without ``--vmr-``)."""
    opt = next(o for o in OPTIONS if o.name == name)
    cli = config.getoption(opt.dest, default=None)
    env = os.environ.get(opt.env)
    ini = config.getini(opt.dest)
    if opt.kind == "bool":
        if cli is not None:
            return bool(cli)
        if env is not None and env.strip():
            return env.strip().lower() in ("1", "true", "yes", "on")
        return bool(ini)
    if opt.kind == "list":
        if cli:
            return _split(cli)
        if env is not None and env.strip():
            return _split([env])
        return _split(list(ini or []))
    if cli not in (None, ""):
        return cli
    if env is not None and env.strip():
        return env.strip()
    if ini:
        return ini
    return opt.default
