"""A pytest plugin (``-p tests.security.crash_plugin``) that makes rules crash the way a bug would.

Reading ``ServiceConfiguration.*.cscfg`` (collection) raises with the whole file in a local. VMR304 parses
each secret-named value as a number, so it raises ``ValueError`` quoting the value, with the
value in its frames' locals and arguments (``site``) and the parsed service model in the caller's
(``subject``). The live guest stage of the target named ``canary-crash`` reads the WinRM password and then raises: its
frame holds the password.
"""

from __future__ import annotations

from typing import Any

import pytest

#: The target whose guest stage crashes (others run the real stage).
CRASH_TARGET = "canary-crash"
_original_guest: Any = None
_original_build_subject: Any = None


def _crashing_shapes(self: Any, site: Any) -> list[Any]:
    value = site.value
    if self.name_suggests(site.name):
        return [int(value)]  # ValueError: invalid literal for int() with base 10: '<the value>'
    return []


def _crashing_build_subject(artefact: Any, *args: Any, **kwargs: Any) -> Any:
    if artefact.path.name.startswith("ServiceConfiguration."):
        text = artefact.path.read_text("utf-8")  # the whole file, secrets included, in this frame
        raise KeyError(f"reader bug after {len(text)} characters")
    return _original_build_subject(artefact, *args, **kwargs)


def _crashing_guest(ctx: Any) -> Any:
    if ctx.target.name != CRASH_TARGET:
        return _original_guest(ctx)
    password = ctx.target.secret(ctx.target.winrm.password)
    raise RuntimeError(f"guest stage broke after logging in (password of {len(password)} characters)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    from harness.checks.secrets import servicemodel_secrets as secrets_rules

    from harness.live.probes import guest

    rule = secrets_rules.SecretNamedSettingValue
    rule.name_suggests = staticmethod(secrets_rules.name_suggests_secret)  # type: ignore[attr-defined]
    rule.shapes = _crashing_shapes  # type: ignore[method-assign]
    from harness import lint  # the plugin collects through harness.lint.prepare, which builds subjects

    global _original_guest, _original_build_subject
    if _original_guest is None:
        _original_guest, _original_build_subject = guest.run, lint.build_subject
    guest.run = _crashing_guest
    lint.build_subject = _crashing_build_subject
