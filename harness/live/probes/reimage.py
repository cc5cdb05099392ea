r"""Stages ``reimage`` and ``reboot`` (destructive): what survives an operation on one instance.

Before the operation, unique markers (a uuid) are written

- to the OS drive, ``C:\vmrole-probe\marker-<uuid>.txt``;
- to each LocalStorage root of the role, ``C:\Resources\Directory\<deploymentId>.<Role>.<Name>\marker-<uuid>.txt``
  (where Azure mounts local storage; the csdef gives the names and ``cleanOnRoleRecycle``);
- to blob storage, directly with azure-storage-blob (the target's connection string, pinned API version), and
  from inside the instance (``Invoke-WebRequest -Method Put`` to a SAS URL for one blob, create/write only).

Then the operation is started (``ctx.management.start_operation``: 409 retried with backoff), followed to
Succeeded and the instance back to ReadyRole, recording the instance status timeline (chart
``<kind>-timeline``) and the operation history (evidence ``<kind>-operation``); then every marker is looked
for again. The rules judge (``checks/live/reimage.py``); markers that survived are removed afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
import time
import types
import uuid
from typing import Any, TypeVar

from harness.facts.live.platform import READY, STORAGE_API_VERSION
from harness.facts.live.reimage import (
    BLOB,
    BLOB_FROM_INSTANCE,
    LOCAL,
    OS,
    Marker,
    OperationOutcome,
    PersistenceFacts,
    RebootFacts,
    ReimageFacts,
)
from harness.facts.servicemodel import ServiceDefinition
from harness.live.context import LiveContext
from harness.live.guestops import definition_of, role_of
from harness.live.health import BLOB as BLOB_STORE
from harness.live.winrm_pool import WinRMError, ps_quote

OS_DIR = "C:\\vmrole-probe"
POLL = 0.1


def run_reimage(ctx: LiveContext) -> ReimageFacts:
    return _run(ctx, "reimage", ReimageFacts)


def run_reboot(ctx: LiveContext) -> RebootFacts:
    return _run(ctx, "reboot", RebootFacts)


def choose_instance(
    ctx: LiveContext, definition: ServiceDefinition | None
) -> tuple[str | None, str | None, str | None]:
    """(instance, role, why not): ``target.reimage.instance``, or the last Ready instance of the first role
    that declares LocalStorage (of the first role when the csdef is unknown or none does)."""
    instances = ctx.deployment().instances
    wanted = ctx.target.reimage.instance
    if wanted and wanted.lower() != "auto":
        for inst in instances:
            if inst.name.lower() == wanted.lower():
                return inst.name, inst.role, None
        return None, None, f"reimage.instance {wanted!r} is not an instance of the deployment"
    roles = [r.name for r in definition.roles if r.local_storage] if definition else []
    roles += [i.role for i in instances if i.role not in roles]
    for role in roles:
        ready = [i.name for i in instances if i.role == role and i.status == READY]
        if ready:
            return ready[-1], role, None
    return None, None, "no instance is ReadyRole"


P = TypeVar("P", bound=PersistenceFacts)


def _run(ctx: LiveContext, kind: str, cls: type[P]) -> P:
    definition = definition_of(ctx.target)
    instance, role, why = choose_instance(ctx, definition)
    if instance is None or role is None:
        return cls(instance=None, role=None, setup_error=why)
    tag = uuid.uuid4().hex
    rdef = role_of(definition, role)
    dep_id = ctx.deployment().private_id
    paths: list[tuple[str, str, str, bool | None]] = [(OS, "C:", f"{OS_DIR}\\marker-{tag}.txt", None)]
    for storage in rdef.local_storage if rdef is not None else ():
        root = f"C:\\Resources\\Directory\\{dep_id}.{role}.{storage.name}"
        paths.append((LOCAL, storage.name, f"{root}\\marker-{tag}.txt", storage.cleaned_on_recycle))
    ctx.log(f"{kind} probe: writing markers", instance=instance, tag=tag)
    markers = _write_files(ctx, instance, paths, tag)
    if not any(m.written for m in markers):
        reason = "; ".join(sorted({m.write_error or "" for m in markers})) or "no marker could be written"
        return cls(instance, role, markers=tuple(markers), setup_error=f"markers not written in {instance}: {reason}")
    blob_service, container, blob_error = _blob_container(ctx)
    if container is None:  # not written: the markers still name where they would have gone
        container = types.SimpleNamespace(container_name=ctx.target.storage.container)
    direct_name = f"{instance}/{kind}-{tag}-direct.txt"
    guest_name = f"{instance}/{kind}-{tag}-guest.txt"
    markers.append(_write_blob_direct(blob_service, container, direct_name, tag, blob_error))
    markers.append(_write_blob_from_instance(ctx, blob_service, container, instance, guest_name, tag, blob_error))

    outcome = _operate(ctx, kind, instance)
    if outcome.succeeded and outcome.ready:
        markers = _verify(ctx, instance, markers, blob_service, container)
    _cleanup(ctx, instance, markers, blob_service, container)
    return cls(instance=instance, role=role, operation=outcome, markers=tuple(markers))


# ---- markers ---------------------------------------------------------------------------------------


def _write_files(
    ctx: LiveContext, instance: str, paths: list[tuple[str, str, str, bool | None]], tag: str
) -> list[Marker]:
    pool = ctx.winrm
    script = [f"New-Item -ItemType Directory -Force -Path {ps_quote(OS_DIR)} | Out-Null"]
    script += [f"Set-Content -Path {ps_quote(p)} -Value {ps_quote(tag)}" for _, _, p, _ in paths]
    try:
        result = pool.run_ps(instance, "\n".join(script))
        present = pool.batch(instance, [f"Test-Path -Path {ps_quote(p)}" for _, _, p, _ in paths])
    except WinRMError as exc:
        return [Marker(k, n, p, c, written=False, write_error=str(exc)) for k, n, p, c in paths]
    out = []
    for (k, n, p, c), ok in zip(paths, present, strict=True):
        error = None if ok is True else (result.stderr.strip()[:300] or f"{p} was not created")
        out.append(Marker(k, n, p, c, written=ok is True, write_error=error))
    return out


#: blob retries: few and short (the SDK's default backs off 15 s, 45 s, …: minutes against a dead endpoint)
BLOB_RETRY: dict[str, Any] = {"retry_total": 2, "initial_backoff": 0.5, "increment_base": 2, "random_jitter_range": 0}


def _blob_container(ctx: LiveContext) -> tuple[Any, Any, str | None]:
    ref = ctx.target.storage.connection_string
    if ref is None:
        return None, None, "the target names no storage connection string"
    try:
        from azure.core.exceptions import ServiceRequestError
        from azure.storage.blob import BlobServiceClient

        timeouts = ctx.target.timeouts
        service = BlobServiceClient.from_connection_string(
            ctx.target.secret(ref),
            api_version=STORAGE_API_VERSION,
            connection_timeout=float(timeouts.connect),
            read_timeout=float(timeouts.read),
            **BLOB_RETRY,
        )
        endpoint = service.url.split("?", 1)[0].rstrip("/")  # never a SAS query in a message
        health = ctx.health
        down = health.down(BLOB_STORE, endpoint)
        if down is not None:
            return None, None, ctx.masker(f"not tried: {down.reason}")
        container = service.get_container_client(ctx.target.storage.container)
        try:
            container.create_container()
        except ServiceRequestError as exc:  # no answer at all: refused, or no answer in time
            text = str(exc).lower()
            refused = "refused" in text
            problem = "refused connections" if refused else f"did not answer ({_short(exc)})"
            down = health.mark_down(BLOB_STORE, endpoint, problem, certain=refused)
            return None, None, ctx.masker(down.reason)
        except Exception:  # ResourceExistsError (or another answer): the writes below say
            pass
        health.mark_up(BLOB_STORE, endpoint)
        return service, container, None
    except Exception as exc:
        return None, None, ctx.masker(f"blob storage unusable: {type(exc).__name__}: {exc}")[:300]


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    text = re.sub(r"\?[^\s)'\"]*", "?…", text)  # a URL's query may carry a SAS signature
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _write_blob_direct(service: Any, container: Any, name: str, tag: str, error: str | None) -> Marker:
    location = f"{container.container_name}/{name}"
    if error is not None:
        return Marker(BLOB, name, location, written=False, write_error=error)
    try:
        container.upload_blob(name, tag.encode(), overwrite=True)
        return Marker(BLOB, name, location, written=True)
    except Exception as exc:
        return Marker(BLOB, name, location, written=False, write_error=f"{type(exc).__name__}: {str(exc)[:200]}")


def sas_url(service: Any, container: str, blob: str, minutes: int = 30) -> tuple[str, str]:
    """A create/write SAS URL for one blob (and its signature, to mask)."""
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    cred = service.credential
    expiry = _dt.datetime.now(_dt.UTC) + _dt.timedelta(minutes=minutes)
    token = generate_blob_sas(
        account_name=cred.account_name,
        container_name=container,
        blob_name=blob,
        account_key=cred.account_key,
        permission=BlobSasPermissions(create=True, write=True),
        expiry=expiry,
        start=_dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5),
    )
    signature = next((p.split("=", 1)[1] for p in token.split("&") if p.startswith("sig=")), "")
    url = f"{service.url.rstrip('/')}/{container}/{blob}?{token}"
    return url, signature


def _write_blob_from_instance(
    ctx: LiveContext, service: Any, container: Any, instance: str, name: str, tag: str, error: str | None
) -> Marker:
    location = f"{container.container_name}/{name}"
    if error is not None:
        return Marker(BLOB_FROM_INSTANCE, name, location, written=False, write_error=error)
    try:
        url, signature = sas_url(service, container.container_name, name)
    except Exception as exc:
        return Marker(BLOB_FROM_INSTANCE, name, location, written=False, write_error=f"no SAS: {exc}")
    import urllib.parse

    ctx.masker.add(signature)
    ctx.masker.add(urllib.parse.unquote(signature))
    script = (
        f"Invoke-WebRequest -Uri {ps_quote(url)} -Method Put -Headers @{{'x-ms-blob-type'='BlockBlob'}} "
        f"-Body {ps_quote(tag)} -UseBasicParsing | Select-Object -ExpandProperty StatusCode"
    )
    try:
        r = ctx.winrm.run_ps(instance, script)
    except WinRMError as exc:
        return Marker(BLOB_FROM_INSTANCE, name, location, written=False, write_error=str(exc))
    if r.rc == 0 and r.stdout.strip() == "201":
        return Marker(BLOB_FROM_INSTANCE, name, location, written=True)
    detail = ctx.masker((r.stderr or r.stdout).strip())[:300]
    return Marker(
        BLOB_FROM_INSTANCE, name, location, written=False, write_error=f"PUT from the instance failed: {detail}"
    )


def _verify(ctx: LiveContext, instance: str, markers: list[Marker], service: Any, container: Any) -> list[Marker]:
    files = [m for m in markers if m.kind in (OS, LOCAL) and m.written]
    found: dict[str, Any] = {}
    error = None
    for _attempt in (1, 2):  # the instance just restarted: the pool reconnects, and we retry once more
        try:
            values = ctx.winrm.batch(instance, [f"Test-Path -Path {ps_quote(m.location)}" for m in files])
            found = {m.location: v for m, v in zip(files, values, strict=True)}
            error = None
            break
        except WinRMError as exc:
            error = str(exc)
            ctx.winrm.forget(instance)
    out = []
    for m in markers:
        if not m.written:
            out.append(m)
        elif m.kind in (OS, LOCAL):
            value = found.get(m.location)
            out.append(_with(m, value if isinstance(value, bool) else None, error or _bad(value)))
        else:
            try:
                exists = container.get_blob_client(m.name).exists()
                out.append(_with(m, bool(exists), None))
            except Exception as exc:
                out.append(_with(m, None, f"{type(exc).__name__}: {str(exc)[:200]}"))
    return out


def _bad(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"Test-Path gave {value!r}"


def _with(m: Marker, present: bool | None, error: str | None) -> Marker:
    return Marker(m.kind, m.name, m.location, m.clean_on_role_recycle, m.written, m.write_error, present, error)


def _cleanup(ctx: LiveContext, instance: str, markers: list[Marker], service: Any, container: Any) -> None:
    files = [m for m in markers if m.kind in (OS, LOCAL) and m.written and m.present_after is not False]
    if files:
        script = [f"Remove-Item -Force -Path {ps_quote(m.location)}" for m in files]
        with contextlib.suppress(WinRMError):
            ctx.winrm.run_ps(instance, "\n".join(script))
    for m in markers:
        if m.kind in (BLOB, BLOB_FROM_INSTANCE) and m.written and container is not None:
            with contextlib.suppress(Exception):
                container.delete_blob(m.name)


# ---- the operation ---------------------------------------------------------------------------------


def instance_status(ctx: LiveContext, instance: str) -> str | None:
    try:
        dep = ctx.deployment(refresh=True)
    except Exception:  # a failed poll: the wait goes on
        return None
    inst = dep.instance(instance)
    return inst.status if inst is not None else None


def _operate(ctx: LiveContext, kind: str, instance: str) -> OperationOutcome:
    limit = float(ctx.target.reimage.timeout_seconds)
    started = time.monotonic()
    deadline = started + limit
    timeline: list[tuple[float, str]] = []

    def note(status: str | None) -> None:
        if status and (not timeline or timeline[-1][1] != status):
            timeline.append((round(time.monotonic() - started, 3), status))

    note(instance_status(ctx, instance))
    try:
        request_id = ctx.management.start_operation(kind, instance)
    except Exception as exc:
        message = ctx.masker(f"{type(exc).__name__}: {exc}")[:400]
        return OperationOutcome(kind, instance, start_error=message, deadline_seconds=limit, timeline=tuple(timeline))
    note(f"{kind} requested")
    result = ctx.management.wait_operation(
        request_id, deadline=deadline, interval=POLL, on_poll=lambda _s: note(instance_status(ctx, instance))
    )
    op_seconds = time.monotonic() - started
    note(f"operation {result.status}")
    ctx.winrm.forget(instance)  # its shell died with the old VM
    ready_at = None
    last = None
    if result.succeeded:
        with contextlib.suppress(Exception):  # the deployment-wide wait (A's readiness); ours below decides
            ctx.wait_ready()
        while True:
            last = instance_status(ctx, instance) or last
            note(last)
            if last == READY:
                ready_at = time.monotonic() - started
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL)
    history = "\n".join(f"{t:8.3f}s  {s}" for t, s in result.history)
    ctx.evidence(
        f"{kind}-operation",
        f"{kind} of {instance}: request {request_id} → {result.status} after {result.seconds:.1f} s"
        + (" (timed out)" if result.timed_out else "")
        + (f"\nerror: {result.error_code} {result.error_message}" if result.error_code or result.error_message else "")
        + f"\noperation history:\n{history}\ninstance timeline:\n"
        + "\n".join(f"{t:8.3f}s  {s}" for t, s in timeline),
    )
    ctx.chart(
        f"{kind}-timeline",
        {
            "instance": instance,
            "events": [[t, s] for t, s in timeline],
            "operation": {
                "kind": kind,
                "request_id": request_id,
                "status": result.status,
                "seconds": round(result.seconds, 3),
                "history": [[t, s] for t, s in result.history],
            },
            "ready_seconds": None if ready_at is None else round(ready_at, 3),
        },
    )
    error = " ".join(x for x in (result.error_code, result.error_message) if x) or None
    return OperationOutcome(
        kind=kind,
        instance=instance,
        request_id=request_id,
        status=result.status,
        error=error,
        timed_out=result.timed_out,
        seconds=op_seconds,
        ready=ready_at is not None,
        ready_seconds=ready_at,
        last_status=last,
        deadline_seconds=limit,
        timeline=tuple(timeline),
    )
