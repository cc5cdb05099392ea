"""WinRM to every role instance: one shell per instance, reused by every check (see CONTRACT.md).

pywinrm's ``Session.run_cmd`` opens and deletes a shell per command; the pool keeps one
``Protocol`` + shell per instance and drives ``run_command`` / ``get_command_output_raw`` /
``cleanup_command`` itself, so that

- a command has an explicit deadline (a slow guest — the fabric's ``winrm-slow`` fault — shows up as a
  :class:`WinRMTimeout` after ``command_timeout`` seconds, never as a hang): the HTTP read timeout, the
  WS-Man ``OperationTimeout`` (long-poll) and the per-command deadline are all configurable;
- a broken shell (the instance rebooted, the connection dropped, the shell id is unknown) is reopened once;
- every command and its output is recorded, masked, as evidence ``winrm-<instance>``.

The instance's address is discovered from the deployment: the InstanceInputEndpoint named
``target.winrm.endpoint`` gives each instance's public port on the VIP. ``REQUESTS_CA_BUNDLE`` is never
consulted: the CA comes from the target (``ca_trust_path``) or the default trust store.

Commands sent (all valid on a real Windows Server):

- ``run_cmd``: the cmd.exe line as given (e.g. ``netstat -an``);
- ``run_ps``: ``powershell -NoProfile -NonInteractive -EncodedCommand <base64 UTF-16LE>`` of
  ``$ProgressPreference='SilentlyContinue'`` + the script; a ``#< CLIXML`` stderr is reduced to its error
  lines, a progress-only document to nothing;
- ``batch``: one ``run_ps`` whose script is, per statement ``i``, ``Write-Output 'vmr-batch:<i>'`` followed by
  ``<statement> | ConvertTo-Json -Compress`` (PowerShell 3.0+); the output is split at the marker lines and
  each part parsed as one JSON document (``None`` when the statement produced nothing or failed).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

from harness.ascii import parse_ascii_int
from harness.facts.live.deployment import DeploymentFacts
from harness.live.health import LB, WINRM, Health

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.context import LiveContext

PS_PREFIX = "$ProgressPreference='SilentlyContinue'"
BATCH_MARK = "vmr-batch:"
CODEPAGE = 65001  # UTF-8 output
MAX_TRANSCRIPT = 60_000


#: Pause before the single retry of a shell whose first connection was dropped.
OPEN_RETRY_PAUSE = 0.5


class WinRMError(Exception):
    """A command could not be run on an instance (the message names the instance and the cause)."""


class WinRMTimeout(WinRMError):
    """The guest did not finish a command (or answer a request) within the deadline."""


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0


def encode_ps(script: str) -> str:
    """The ``-EncodedCommand`` argument for a script (base64 of UTF-16LE), with progress output off."""
    return base64.b64encode(f"{PS_PREFIX}\n{script}".encode("utf-16-le")).decode("ascii")


def ps_command(script: str) -> str:
    return f"powershell -NoProfile -NonInteractive -EncodedCommand {encode_ps(script)}"


def ps_quote(text: str) -> str:
    """A PowerShell single-quoted string literal."""
    return "'" + text.replace("'", "''") + "'"


_XESC = re.compile(r"_x([0-9A-Fa-f]{4})_")


def clean_clixml(stderr: str) -> str:
    """Error text from a ``#< CLIXML`` stderr (progress records dropped); other text is returned as is."""
    if not stderr.startswith("#< CLIXML"):
        return stderr
    body = stderr.split("\n", 1)[1] if "\n" in stderr else ""
    lines: list[str] = []
    for doc in re.findall(r"<Objs\b.*?</Objs>", body, re.DOTALL) or [body]:
        doc = re.sub(r'\sxmlns="[^"]*"', "", doc)
        try:
            root = ET.fromstring(doc)
        except ET.ParseError:
            return stderr
        for node in root.iter("S"):
            if node.get("S", "Error") == "Error" and node.text:
                lines.append(_XESC.sub(lambda m: chr(int(m.group(1), 16)), node.text))
    return "".join(lines).strip()


def parse_batch(stdout: str, count: int) -> list[Any]:
    """Split a batch's stdout at its marker lines and parse one JSON document per statement."""
    parts: dict[int, list[str]] = {}
    current: int | None = None
    for line in stdout.splitlines():
        text = line.strip()
        if text.startswith(BATCH_MARK):
            tail = text[len(BATCH_MARK) :]
            current = parse_ascii_int(tail, strip=False)
            if current is not None:
                parts.setdefault(current, [])
            continue
        if current is not None and text:
            parts[current].append(text)
    out: list[Any] = []
    for i in range(count):
        text = "".join(parts.get(i, []))
        try:
            out.append(json.loads(text) if text else None)
        except ValueError:
            out.append(None)
    return out


class _Shell:
    def __init__(self, protocol: Any, shell_id: str, address: tuple[str, int]) -> None:
        self.protocol = protocol
        self.shell_id = shell_id
        self.address = address
        self.lock = threading.Lock()
        self.commands = 0


class WinRMPool:
    """One WinRM shell per instance, opened on first use and kept until :meth:`close`."""

    def __init__(
        self,
        ctx: LiveContext,
        *,
        addresses: dict[str, tuple[str, int]] | None = None,
        read_timeout: float | None = None,
        operation_timeout: float | None = None,
        command_timeout: float = 120.0,
    ) -> None:
        self.ctx = ctx
        self.target = ctx.target
        read = float(read_timeout if read_timeout is not None else self.target.timeouts.read)
        self.read_timeout = max(2, round(read))
        op = operation_timeout if operation_timeout is not None else max(1.0, read / 2)
        self.operation_timeout = max(1, min(int(op), self.read_timeout - 1))
        self.command_timeout = command_timeout
        self._addresses = dict(addresses or {})
        self._shells: dict[str, _Shell] = {}
        self._transcripts: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.reconnects: dict[str, int] = {}

    # ---- addresses ---------------------------------------------------------------------------
    def address(self, instance: str) -> tuple[str, int]:
        if instance not in self._addresses:
            self._addresses.update(winrm_addresses(self.ctx.deployment(), self.target.winrm.endpoint))
        if instance not in self._addresses:
            try:
                fresh = self.ctx.deployment(refresh=True)
            except Exception as exc:  # the management API failed: this command cannot run, the stage goes on
                raise WinRMError(
                    self.ctx.masker(f"{instance}: its WinRM address is unknown and Get Deployment failed: {exc}")
                ) from None
            self._addresses.update(winrm_addresses(fresh, self.target.winrm.endpoint))
        try:
            return self._addresses[instance]
        except KeyError:
            raise WinRMError(
                f"instance {instance} has no instance input endpoint {self.target.winrm.endpoint!r} in the "
                "deployment: its WinRM address is unknown"
            ) from None

    # ---- shells ------------------------------------------------------------------------------
    def _protocol(self, address: tuple[str, int]) -> Any:
        from winrm.protocol import Protocol

        w = self.target.winrm
        host, port = address
        host = f"[{host}]" if ":" in host else host
        options: dict[str, Any] = {
            "transport": w.transport if w.transport != "basic" else ("ssl" if w.scheme == "https" else "basic"),
            "username": w.username,
            "password": self.target.secret(w.password) if w.password is not None else "",
            "read_timeout_sec": self.read_timeout,
            "operation_timeout_sec": self.operation_timeout,
            "proxy": None,  # loopback / direct: never an environment proxy
            "server_cert_validation": "validate" if w.verify else "ignore",
            # an explicit CA path, or None for the default store: never REQUESTS_CA_BUNDLE ("legacy_requests")
            "ca_trust_path": str(w.ca) if w.ca is not None else None,
        }
        return Protocol(f"{w.scheme}://{host}:{port}/wsman", **options)

    def shell(self, instance: str) -> _Shell:
        with self._lock:
            shell = self._shells.get(instance)
        if shell is not None:
            return shell
        address = self.address(instance)
        self._check_health(instance, address)
        started = time.monotonic()
        try:
            protocol = self._protocol(address)
            try:
                shell_id = protocol.open_shell(codepage=CODEPAGE)
            except (requests.exceptions.SSLError, requests.exceptions.ConnectionError):
                # One retry on a fresh connection: a listener that has just (re)started, or a loaded host, can
                # drop the first TLS handshake. A second failure is reported as it is.
                time.sleep(OPEN_RETRY_PAUSE)
                protocol = self._protocol(address)
                shell_id = protocol.open_shell(codepage=CODEPAGE)
        except Exception as exc:
            self._note_down(instance, address, exc)
            raise self._wrap(instance, "open a shell", exc) from None
        self._health().mark_up(WINRM, instance)
        self.ctx.log("winrm shell opened", instance=instance, seconds=round(time.monotonic() - started, 3))
        shell = _Shell(protocol, shell_id, address)
        with self._lock:
            existing = self._shells.setdefault(instance, shell)
        if existing is not shell:
            self._close_one(shell)
        return existing

    # ---- dependency records ------------------------------------------------------------------
    def _health(self) -> Health:
        return self.ctx.health

    def _check_health(self, instance: str, address: tuple[str, int]) -> None:
        """Fail at once when this instance's WinRM, or the load balancer in front of it, is known down."""
        health = self._health()
        host, port = address
        down = health.down(WINRM, instance) or health.down(LB, f"{host}:{port}")
        if down is not None:
            raise WinRMError(self.ctx.masker(f"{instance} ({host}:{port}): not tried: {down.reason}"))

    def _note_down(self, instance: str, address: tuple[str, int], exc: BaseException) -> None:
        """Remember a refused connection (certain) or a timeout (tried once) for this instance's WinRM."""
        host, port = address
        text = f"{type(exc).__name__}: {exc}".lower()
        if "refused" in text:
            problem, certain = "refused connections", True
        elif _is_read_timeout(exc) or "timed out" in text:
            problem, certain = f"did not answer within {self.read_timeout} s", False
        else:
            return
        what = f"WinRM of {instance} at {host}:{port}"
        self._health().mark_down(WINRM, instance, problem, certain=certain, what=what)
        if certain:  # an instance input endpoint: the load balancer itself refused on this port
            self._health().mark_down(LB, f"{host}:{port}", problem)

    def shell_id(self, instance: str) -> str:
        return self.shell(instance).shell_id

    def _drop(self, instance: str) -> None:
        with self._lock:
            shell = self._shells.pop(instance, None)
        if shell is not None:
            self._close_one(shell)

    @staticmethod
    def _close_one(shell: _Shell) -> None:
        with contextlib.suppress(Exception):  # the shell may already be gone (instance reimaged)
            shell.protocol.close_shell(shell.shell_id)

    def close(self) -> None:
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
        for shell in shells:
            self._close_one(shell)

    def forget(self, instance: str) -> None:
        """Drop an instance's shell (e.g. after a reboot); the next command opens a new one."""
        self._drop(instance)

    # ---- commands ----------------------------------------------------------------------------
    def run_cmd(self, instance: str, cmd: str, args: Sequence[str] = (), *, timeout: float | None = None) -> Result:
        return self._run(instance, cmd, tuple(args), shown=" ".join([cmd, *args]), timeout=timeout)

    def run_ps(self, instance: str, script: str, *, timeout: float | None = None) -> Result:
        result = self._run(instance, ps_command(script), (), shown=f"powershell> {script}", timeout=timeout)
        return Result(result.rc, result.stdout, clean_clixml(result.stderr), result.seconds)

    def batch(self, instance: str, statements: Sequence[str], *, timeout: float | None = None) -> list[Any]:
        """Run single-cmdlet statements in one round trip; one parsed JSON value (or None) per statement."""
        lines = []
        for i, stmt in enumerate(statements):
            lines.append(f"Write-Output '{BATCH_MARK}{i}'")
            lines.append(f"{stmt} | ConvertTo-Json -Compress")
        lines.append(f"Write-Output '{BATCH_MARK}end'")
        result = self.run_ps(instance, "\n".join(lines), timeout=timeout)
        if BATCH_MARK not in result.stdout:
            raise WinRMError(
                f"{instance}: the PowerShell batch produced no output (rc {result.rc}): "
                f"{(result.stderr or result.stdout).strip()[:300]}"
            )
        return parse_batch(result.stdout, len(statements))

    def _run(self, instance: str, cmd: str, args: tuple[str, ...], *, shown: str, timeout: float | None) -> Result:
        deadline = self.command_timeout if timeout is None else timeout
        for attempt in (1, 2):
            shell = self.shell(instance)
            started = time.monotonic()
            try:
                with shell.lock:
                    rc, out, err = self._execute(shell, cmd, args, started + deadline, deadline)
                    shell.commands += 1
            except WinRMTimeout as exc:
                self._record(instance, shown, None, "", str(exc), time.monotonic() - started)
                self._drop(instance)  # the shell may hold a running command: start clean next time
                raise WinRMTimeout(f"{instance}: {exc}") from None
            except Exception as exc:
                self._drop(instance)
                if attempt == 1 and _broken(exc):
                    self.reconnects[instance] = self.reconnects.get(instance, 0) + 1
                    self.ctx.log("winrm shell broken, reconnecting", instance=instance, error=type(exc).__name__)
                    continue
                raise self._wrap(instance, f"run {shown[:80]!r}", exc) from None
            seconds = time.monotonic() - started
            stdout = out.decode("utf-8", "replace")
            stderr = err.decode("utf-8", "replace")
            self._record(instance, shown, rc, stdout, stderr, seconds)
            return Result(rc, stdout, stderr, seconds)
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(
        self, shell: _Shell, cmd: str, args: tuple[str, ...], deadline: float, limit: float
    ) -> tuple[int, bytes, bytes]:
        from winrm.exceptions import WinRMOperationTimeoutError

        protocol = shell.protocol
        try:
            command_id = protocol.run_command(shell.shell_id, cmd, list(args))
        except Exception as exc:
            if _is_read_timeout(exc):
                raise WinRMTimeout(f"no answer to the command within {self.read_timeout} s (read timeout)") from None
            raise
        out: list[bytes] = []
        err: list[bytes] = []
        done = False
        rc = -1
        try:
            while not done:
                if time.monotonic() > deadline:
                    raise WinRMTimeout(f"the command did not finish within {limit:g} s")
                try:
                    o, e, rc, done = protocol.get_command_output_raw(shell.shell_id, command_id)
                    out.append(o)
                    err.append(e)
                except WinRMOperationTimeoutError:
                    continue  # long-poll ended with no output: poll again (until the deadline)
                except Exception as exc:
                    if _is_read_timeout(exc):
                        raise WinRMTimeout(f"no answer within the {self.read_timeout} s read timeout") from None
                    raise
        finally:
            with contextlib.suppress(Exception):  # a timed-out or finished command may already be gone
                protocol.cleanup_command(shell.shell_id, command_id)
        return rc, b"".join(out), b"".join(err)

    # ---- records -----------------------------------------------------------------------------
    def _record(self, instance: str, shown: str, rc: int | None, stdout: str, stderr: str, seconds: float) -> None:
        lines = self._transcripts.setdefault(instance, [])
        lines.append(
            f"$ {shown}\n[rc={rc} {seconds:.3f}s]\n{stdout.rstrip()}\n"
            + (f"[stderr]\n{stderr.rstrip()}\n" if stderr.strip() else "")
        )
        text = "\n".join(lines)
        if len(text) > MAX_TRANSCRIPT:
            text = "…(earlier output cut)…\n" + text[-MAX_TRANSCRIPT:]
        self.ctx.evidence(f"winrm-{instance}", text)
        self.ctx.log("winrm command", instance=instance, rc=rc, seconds=round(seconds, 3))

    def _wrap(self, instance: str, what: str, exc: Exception) -> WinRMError:
        detail = self.ctx.masker(f"{type(exc).__name__}: {exc}")[:400]
        host, port = self._addresses.get(instance, ("?", 0))
        cls = WinRMTimeout if _is_read_timeout(exc) else WinRMError
        return cls(f"{instance} ({host}:{port}): could not {what}: {detail}")


def _is_read_timeout(exc: BaseException) -> bool:
    import requests

    return isinstance(exc, (requests.exceptions.Timeout, TimeoutError))


def _broken(exc: BaseException) -> bool:
    """A shell worth reopening once: connection dropped / reset, or the server no longer knows the shell."""
    import requests
    from winrm.exceptions import WinRMError as PyWinRMError
    from winrm.exceptions import WinRMTransportError, WSManFaultError

    if _is_read_timeout(exc):
        return False
    if isinstance(exc, (requests.exceptions.ConnectionError, WinRMTransportError, ConnectionError)):
        return True
    if isinstance(exc, WSManFaultError):
        return True  # e.g. InvalidSelectors: the shell id is gone (the instance restarted)
    return isinstance(exc, PyWinRMError)


def winrm_addresses(deployment: DeploymentFacts, endpoint: str) -> dict[str, tuple[str, int]]:
    """instance name -> (VIP, public port) of its instance input endpoint ``endpoint``."""
    out: dict[str, tuple[str, int]] = {}
    for inst in deployment.instances:
        for ep in inst.endpoints:
            if ep.name.lower() != endpoint.lower():
                continue
            vip = ep.vip or deployment.vip
            if inst.name and ep.public_port is not None and vip:
                out[inst.name] = (vip, ep.public_port)
    return out
