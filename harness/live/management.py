"""The Service Management API, through the real legacy client, with the retries and evidence live stages need.

:class:`ManagementClient` wraps ``azure.servicemanagement.ServiceManagementService``
(package azure-servicemanagement-legacy):

- an explicit ``requests.Session`` (``trust_env = False``: ``REQUESTS_CA_BUNDLE`` would override ``verify``),
  ``cert = (certificate, key)`` from the target's file references, ``verify`` = the target's CA file, the
  system store, or ``False`` when the target says ``verify: false``;
- ``host`` and protocol from the target's ``management.url`` (``_httpclient.protocol = "http"`` for http);
- separate connect and read timeouts (``requests``' ``(connect, read)`` tuple, from ``target.timeouts``);
- a request filter that keeps each response's status, ``x-ms-request-id`` and body (the SDK reads
  ``Operation.id`` from ``<Id>`` while Azure sends ``<ID>``, so the request id is kept here);
- ``409 ConflictError`` (another operation holds the deployment) → retried with exponential backoff, bounded
  by attempts and a deadline; ``5xx`` and connection failures → a few bounded retries; everything logged
  through ``log`` (the stages pass ``ctx.log``);
- errors surface as :class:`ManagementError` naming the HTTP status and Azure's error code.

It never calls the SDK's ``wait_for_operation_status`` (it prints to stdout and polls on its own clock):
:meth:`ManagementClient.wait_operation` polls with a deadline and keeps the status history.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.facts.live.platform import OPERATION_FAILED as FAILED
from harness.facts.live.platform import SUCCEEDED
from harness.live.health import MGMT, Health
from harness.live.masking import Masker

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.target import SecretRef, Target

OPERATION_KINDS = ("reboot", "reimage", "rebuild")

_ERROR_CODE = re.compile(r"<Code>\s*([^<]+?)\s*</Code>")
_ERROR_MESSAGE = re.compile(r"<Message>\s*([^<]*?)\s*</Message>", re.DOTALL)
_CONFIGURATION = re.compile(r"(<Configuration>)([^<]*)(</Configuration>)")

LogFn = Callable[..., None]


class ManagementError(Exception):
    """A Service Management call that failed for good (after any retries).

    ``status`` is the HTTP status (``None`` when no HTTP answer came: refused, timed out, TLS failure),
    ``code`` Azure's error code (``ConflictError``, ``ResourceNotFound`` …) when the body had one,
    ``request_id`` the answer's ``x-ms-request-id``, ``attempts`` how many requests were made.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        attempts: int = 1,
        known_down: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.attempts = attempts
        #: not tried: an earlier call found the API unreachable (refused, or no answer in time) in this run
        self.known_down = known_down

    @property
    def unreachable(self) -> bool:
        """No HTTP answer at all (connection refused/reset/timed out, TLS handshake failed)."""
        return self.status is None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retries. ``conflict_*``: 409 ConflictError (backoff doubles from ``conflict_initial`` up to
    ``conflict_max_delay``); ``transient_*``: 5xx answers and connection failures."""

    conflict_attempts: int = 8
    conflict_deadline: float = 120.0
    conflict_initial: float = 0.5
    conflict_max_delay: float = 16.0
    transient_attempts: int = 3
    transient_delay: float = 0.5


@dataclass(frozen=True)
class DeploymentResponse:
    """Get Deployment: the client's ``models.Deployment`` and the raw XML (masked; the base64
    ``<Configuration>`` is replaced by a placeholder, it may hold secrets — read ``deployment.configuration``)."""

    deployment: Any
    xml: str
    request_id: str
    seconds: float
    attempts: int = 1


@dataclass(frozen=True)
class OperationStatus:
    request_id: str
    status: str  # InProgress | Succeeded | Failed
    http_status_code: str = ""
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class OperationResult:
    """How an asynchronous operation ended (or the deadline passed: ``timed_out``)."""

    request_id: str
    status: str
    seconds: float
    timed_out: bool
    history: tuple[tuple[float, str], ...] = ()  # (seconds since the wait started, status), on each change
    error_code: str | None = None
    error_message: str | None = None
    poll_errors: tuple[str, ...] = ()  # status polls that failed (the wait went on)

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


@dataclass
class _Exchange:
    """What the filter saw of the last response on this thread."""

    status: int | None = None
    request_id: str = ""
    body: bytes = b""
    method: str = ""
    path: str = ""


@dataclass
class _Sleeper:
    """Injectable clock (tests replace it)."""

    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic


def _azure_error(body: bytes | str | None) -> tuple[str | None, str | None]:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    code = _ERROR_CODE.search(text)
    message = _ERROR_MESSAGE.search(text)
    return (code.group(1) if code else None, message.group(1).strip() if message else None)


def strip_configuration(xml: str) -> str:
    """The deployment XML with the base64 ServiceConfiguration replaced (it may contain secrets that a
    masker cannot see inside base64 of a whole document)."""
    return _CONFIGURATION.sub(
        lambda m: (
            f"{m.group(1)}(base64 ServiceConfiguration, {len(m.group(2))} characters, omitted: it may "
            f"contain secrets){m.group(3)}"
        ),
        xml,
    )


class ManagementClient:
    """Service Management calls for one target (one session, reused)."""

    def __init__(
        self,
        target: Target,
        masker: Masker | None = None,
        *,
        log: LogFn | None = None,
        policy: RetryPolicy | None = None,
        clock: _Sleeper | None = None,
        health: Health | None = None,
    ) -> None:
        import requests
        from azure.servicemanagement import ServiceManagementService

        self.target = target
        self.masker = masker or Masker()
        self.log: LogFn = log or (lambda event, **fields: None)
        self.policy = policy or RetryPolicy()
        self.clock = clock or _Sleeper()
        #: dependencies found down in this run (shared with the other clients of the context)
        self.health = health or Health()
        self._local = threading.local()
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._deployment_name: str | None = target.management.deployment

        mgmt = target.management
        url = urllib.parse.urlsplit(mgmt.url)
        self.protocol = url.scheme.lower()
        self.host = url.netloc
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override session.verify
        if mgmt.ca is not None:
            session.verify = str(mgmt.ca)
        elif not mgmt.verify:
            session.verify = False
        if mgmt.certificate is not None:
            cert = self._file_of(mgmt.certificate, "certificate")
            session.cert = (cert, self._file_of(mgmt.key, "key")) if mgmt.key is not None else cert
        self.session = session
        self.timeouts = (float(target.timeouts.connect), float(target.timeouts.read))
        client = ServiceManagementService(
            mgmt.subscription_id, host=self.host, request_session=session, timeout=self.timeouts
        )
        if self.protocol == "http":
            client._httpclient.protocol = "http"
        inner = client._filter
        client._filter = lambda request: self._filter(request, inner)
        self.sms = client

    # ---- plumbing ---------------------------------------------------------------------------
    def _file_of(self, ref: SecretRef | None, what: str) -> str:
        """A path for a certificate/key reference: the file itself, or a private temporary copy of an
        environment variable's value (deleted on close)."""
        if ref is None:
            raise ManagementError(f"the target's management {what} is not configured")
        if ref.file is not None:
            return str(ref.file)
        value = self.target.secret(ref)
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="vmr-mgmt-")
            os.chmod(self._tempdir.name, 0o700)
        path = Path(self._tempdir.name) / f"{what}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value if value.endswith("\n") else value + "\n")
        return str(path)

    def close(self) -> None:
        self.session.close()
        if self._tempdir is not None:
            with contextlib.suppress(OSError):
                self._tempdir.cleanup()
            self._tempdir = None

    def _filter(self, request: Any, inner: Callable[[Any], Any]) -> Any:
        from azure.servicemanagement._http import HTTPError

        exchange = _Exchange(method=request.method, path=request.path)
        self._local.exchange = exchange
        try:
            response = inner(request)
        except HTTPError as exc:
            headers = dict(exc.respheader or [])
            exchange.status = int(exc.status)
            exchange.request_id = headers.get("x-ms-request-id", "")
            exchange.body = exc.respbody or b""
            raise
        headers = dict(response.headers or [])
        exchange.status = int(response.status)
        exchange.request_id = headers.get("x-ms-request-id", "")
        exchange.body = response.body or b""
        return response

    def _last(self) -> _Exchange:
        return getattr(self._local, "exchange", None) or _Exchange()

    @property
    def base_url(self) -> str:
        return f"{self.protocol}://{self.host}"

    def _call(self, what: str, fn: Callable[[], Any], *, idempotent: bool, retry_conflict: bool = True) -> Any:
        """Run one SDK call with the retry policy; returns (result, exchange, attempts)."""
        import requests
        from azure.common import AzureHttpError

        policy = self.policy
        down = self.health.down(MGMT, self.base_url)
        if down is not None:  # refused (or silent) before in this run: do not wait for it again
            raise ManagementError(self.masker(f"{what}: not tried: {down.reason}"), known_down=True)
        start = self.clock.monotonic()
        attempts = 0
        conflicts = 0
        transient = 0
        delay = policy.conflict_initial
        while True:
            attempts += 1
            self._local.exchange = None
            try:
                result = fn()
                self.health.mark_up(MGMT, self.base_url)
                return result, self._last(), attempts
            except AzureHttpError as exc:
                ex = self._last()
                status = int(getattr(exc, "status_code", 0) or ex.status or 0)
                code, message = _azure_error(ex.body or str(exc))
                detail = f"{status} {code or 'error'}" + (f": {message}" if message else "")
                if ex.request_id:
                    detail += f" (request id {ex.request_id})"
                elapsed = self.clock.monotonic() - start
                if status == 409 and retry_conflict:
                    conflicts += 1
                    wait = min(delay, policy.conflict_max_delay)
                    if conflicts >= policy.conflict_attempts or elapsed + wait > policy.conflict_deadline:
                        raise ManagementError(
                            self.masker(
                                f"{what}: {detail} (still conflicting after {attempts} attempts over {elapsed:.1f} s)"
                            ),
                            status=status,
                            code=code,
                            request_id=ex.request_id,
                            attempts=attempts,
                        ) from None
                    self.log(
                        f"management {what}: 409 {code or 'ConflictError'}, retrying in {wait:.2f} s",
                        attempt=attempts,
                        delay=round(wait, 3),
                        request_id=ex.request_id,
                    )
                    self.clock.sleep(wait)
                    delay *= 2
                    continue
                if status >= 500 and transient + 1 < policy.transient_attempts:
                    transient += 1
                    wait = policy.transient_delay * (2 ** (transient - 1))
                    self.log(
                        f"management {what}: {status} {code or 'server error'}, retrying in {wait:.2f} s",
                        attempt=attempts,
                        delay=round(wait, 3),
                        request_id=ex.request_id,
                    )
                    self.clock.sleep(wait)
                    continue
                retried = f" after {attempts} attempts" if attempts > 1 else ""
                raise ManagementError(
                    self.masker(f"{what}: the management API answered {detail}{retried}"),
                    status=status,
                    code=code,
                    request_id=ex.request_id,
                    attempts=attempts,
                ) from None
            except requests.RequestException as exc:
                kind = _connection_problem(exc)
                refused = kind == "connection refused"
                timed_out = isinstance(exc, requests.Timeout)
                # a read timeout on a POST may have started the operation: never repeat it; a timeout costs a
                # full timeout each time: tried once, then remembered (below)
                may_retry = (idempotent or not isinstance(exc, requests.ReadTimeout)) and not timed_out
                if may_retry and transient + 1 < policy.transient_attempts:
                    transient += 1
                    wait = policy.transient_delay * (2 ** (transient - 1))
                    self.log(f"management {what}: {kind}, retrying in {wait:.2f} s", attempt=attempts)
                    self.clock.sleep(wait)
                    continue
                retried = f" after {attempts} attempts" if attempts > 1 else ""
                if refused or timed_out:
                    problem = "refused connections" if refused else f"did not answer ({kind})"
                    self.health.mark_down(MGMT, self.base_url, problem, certain=refused)
                raise ManagementError(
                    self.masker(f"{what}: the management API at {self.base_url} is unreachable ({kind}){retried}"),
                    attempts=attempts,
                ) from None

    # ---- calls --------------------------------------------------------------------------------
    def get_deployment(self) -> DeploymentResponse:
        """Get Deployment by slot or by name (as the target says), with the raw XML for evidence."""
        mgmt = self.target.management
        started = self.clock.monotonic()
        if mgmt.deployment:
            what = f"Get Deployment {mgmt.service}/{mgmt.deployment}"
            result, ex, attempts = self._call(
                what, lambda: self.sms.get_deployment_by_name(mgmt.service, mgmt.deployment), idempotent=True
            )
        else:
            slot = (mgmt.slot or "production").lower()
            what = f"Get Deployment {mgmt.service} (slot {slot})"
            result, ex, attempts = self._call(
                what, lambda: self.sms.get_deployment_by_slot(mgmt.service, slot), idempotent=True
            )
        if result.name:
            self._deployment_name = result.name
        xml = self.masker(strip_configuration(ex.body.decode("utf-8-sig", "replace")))
        seconds = self.clock.monotonic() - started
        return DeploymentResponse(result, xml, ex.request_id, seconds, attempts)

    def deployment_name(self) -> str:
        if self._deployment_name is None:
            self.get_deployment()
        assert self._deployment_name is not None
        return self._deployment_name

    def start_operation(self, kind: str, instance: str) -> str:
        """Start reboot/reimage/rebuild of ``instance``; returns the ``x-ms-request-id``.
        A 409 ConflictError (another operation holds the deployment) is retried with backoff."""
        if kind not in OPERATION_KINDS:
            raise ValueError(f"unknown operation {kind!r} (choose from {', '.join(OPERATION_KINDS)})")
        service = self.target.management.service
        name = self.deployment_name()
        method = getattr(self.sms, f"{kind}_role_instance")
        what = f"{kind.capitalize()} Role Instance {instance}"
        result, ex, attempts = self._call(what, lambda: method(service, name, instance), idempotent=False)
        request_id = ex.request_id or getattr(result, "request_id", "") or ""
        if not request_id:
            raise ManagementError(f"{what}: the answer carried no x-ms-request-id", status=ex.status)
        self.log(f"management {what}: started", request_id=request_id, attempts=attempts)
        return request_id

    def operation_status(self, request_id: str) -> OperationStatus:
        what = f"Get Operation Status {request_id}"
        op, _ex, _ = self._call(what, lambda: self.sms.get_operation_status(request_id), idempotent=True)
        error = getattr(op, "error", None)
        return OperationStatus(
            request_id=request_id,  # op.id is '' against Azure's <ID> (the SDK reads <Id>)
            status=str(op.status or ""),
            http_status_code=str(op.http_status_code or ""),
            error_code=(getattr(error, "code", None) or None) if error is not None else None,
            error_message=self.masker(getattr(error, "message", "") or "") or None if error is not None else None,
        )

    def wait_operation(
        self,
        request_id: str,
        timeout: float | None = None,
        *,
        deadline: float | None = None,
        interval: float = 0.5,
        on_poll: Callable[[OperationStatus], None] | None = None,
    ) -> OperationResult:
        """Poll Get Operation Status until Succeeded/Failed or the deadline (``timeout`` seconds from now, or
        an absolute ``time.monotonic()`` ``deadline``). Never raises for a failed poll: it is recorded in
        ``poll_errors`` and polling goes on; the result says ``timed_out`` when the deadline passed."""
        start = self.clock.monotonic()
        if deadline is None:
            deadline = start + (timeout if timeout is not None else self.target.timeouts.ready)
        history: list[tuple[float, str]] = []
        errors: list[str] = []
        last: OperationStatus | None = None
        while True:
            try:
                last = self.operation_status(request_id)
                if on_poll is not None:
                    on_poll(last)
                if not history or history[-1][1] != last.status:
                    history.append((round(self.clock.monotonic() - start, 3), last.status))
                    self.log(f"operation {request_id}: {last.status}", seconds=history[-1][0])
                if last.status in (SUCCEEDED, FAILED):
                    return OperationResult(
                        request_id,
                        last.status,
                        self.clock.monotonic() - start,
                        False,
                        tuple(history),
                        last.error_code,
                        last.error_message,
                        tuple(errors),
                    )
            except ManagementError as exc:
                errors.append(str(exc))
                if exc.known_down:  # the API is gone for this run: waiting longer tells nothing more
                    return OperationResult(
                        request_id,
                        last.status if last is not None else "Unknown",
                        self.clock.monotonic() - start,
                        False,
                        tuple(history),
                        last.error_code if last else None,
                        str(exc),
                        tuple(errors),
                    )
            now = self.clock.monotonic()
            if now >= deadline:
                return OperationResult(
                    request_id,
                    last.status if last is not None else "Unknown",
                    now - start,
                    True,
                    tuple(history),
                    last.error_code if last else None,
                    last.error_message if last else None,
                    tuple(errors),
                )
            self.clock.sleep(min(interval, max(0.0, deadline - now)))


def _connection_problem(exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS handshake failed: {_short(exc)}"
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer within the read timeout"
    if isinstance(exc, requests.ConnectionError):
        text = _short(exc)
        full = str(exc).lower()  # urllib3's wording puts the errno text past the clipped part
        if "refused" in full or _caused_by(exc, ConnectionRefusedError):
            return "connection refused"
        if "reset" in full or "aborted" in full:
            return "connection reset"
        return f"connection failed: {text}"
    return f"{type(exc).__name__}: {_short(exc)}"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, kind):
            return True
        reason = getattr(cur, "reason", None)  # urllib3's MaxRetryError keeps the cause there
        stack += [cur.__cause__, cur.__context__, reason if isinstance(reason, BaseException) else None]
        stack += [a for a in cur.args if isinstance(a, BaseException)]
    return False


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "DeploymentResponse",
    "ManagementClient",
    "ManagementError",
    "OperationResult",
    "OperationStatus",
    "RetryPolicy",
    "strip_configuration",
]
