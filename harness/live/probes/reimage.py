r"""Stages ``reimage`` and ``reboot`` (destructive): what survives an operation on one instance.

Before the operation, unique markers (a uuid) are written

- to the OS drive, ``C:\vmrole-probe\marker-<uuid>.txt``;
- on a classic deployment, to each LocalStorage root of the role,
  ``C:\Resources\Directory\<deploymentId>.<Role>.<Name>\marker-<uuid>.txt`` (where Azure mounts local storage;
  the csdef gives the names and ``cleanOnRoleRecycle``);
- on a scale-set VM (``management.api: vmss``), to each data disk the VM model lists (LUN, name), on the volume
  the guest shows at that LUN (:mod:`harness.live.guest_disks`, one batched PowerShell run; or the target's
  ``reimage.data_disks``), and to the temporary disk (the volume labelled ``Temporary Storage``, or
  ``reimage.temp_disk``), each as ``<volume>\vmrole-probe\marker-<uuid>.txt``; a data disk without a volume or
  a VM size without a temporary disk is a skipped marker (the reason names the LUN), not a failure;
- to blob storage, directly with azure-storage-blob (the target's connection string, pinned API version), and
  from inside the instance (``Invoke-WebRequest -Method Put`` to a SAS URL for one blob, create/write only).

Then the operation is started (``ctx.management.start_operation``: 409 retried with backoff), followed to
Succeeded and the instance back to ReadyRole, recording the instance status timeline (chart
``<kind>-timeline``) and the operation history (evidence ``<kind>-operation``); then every marker is looked
for again. The rules judge (``checks/live/reimage.py``); markers that survived are removed afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    DATA,
    FILE_KINDS,
    LOCAL,
    OS,
    TEMP,
    DataDisk,
    Marker,
    OperationOutcome,
    PersistenceFacts,
    RebootFacts,
    ReimageFacts,
)
from harness.facts.servicemodel import ServiceDefinition
from harness.live import guest_disks
from harness.live.context import LiveContext
from harness.live.guest_disks import TEMP_LABEL
from harness.live.guestops import definition_of, role_of
from harness.live.health import BLOB as BLOB_STORE
from harness.live.management import ManagementError
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
    planned = [Marker(OS, "C:", f"{OS_DIR}\\marker-{tag}.txt")]
    disks = _disk_markers(ctx, kind, instance, tag)
    if disks is None:  # a classic role: its LocalStorage, where Azure mounts it
        rdef = role_of(definition, role)
        dep_id = ctx.deployment().private_id
        for storage in rdef.local_storage if rdef is not None else ():
            root = f"C:\\Resources\\Directory\\{dep_id}.{role}.{storage.name}"
            planned.append(Marker(LOCAL, storage.name, f"{root}\\marker-{tag}.txt", storage.cleaned_on_recycle))
    else:
        planned += disks
    ctx.log(f"{kind} probe: writing markers", instance=instance, tag=tag)
    markers = _write_files(ctx, instance, planned, tag)
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


def _marker_dir(location: str) -> str:
    return location.rsplit("\\", 1)[0]


def _write_files(ctx: LiveContext, instance: str, planned: list[Marker], tag: str) -> list[Marker]:
    """Writes every planned file marker not skipped or already failed; the others are returned as they are."""
    todo = [m for m in planned if m.skipped is None and m.write_error is None]
    pool = ctx.winrm
    dirs = dict.fromkeys(_marker_dir(m.location) for m in todo if m.kind != LOCAL)  # LocalStorage roots exist
    script = [f"New-Item -ItemType Directory -Force -Path {ps_quote(d)} | Out-Null" for d in dirs]
    script += [f"Set-Content -Path {ps_quote(m.location)} -Value {ps_quote(tag)}" for m in todo]
    try:
        result = pool.run_ps(instance, "\n".join(script))
        present = pool.batch(instance, [f"Test-Path -Path {ps_quote(m.location)}" for m in todo])
    except WinRMError as exc:
        done = {id(m): dataclasses.replace(m, write_error=str(exc)) for m in todo}
        return [done.get(id(m), m) for m in planned]
    written = {}
    for m, ok in zip(todo, present, strict=True):
        error = None if ok is True else (result.stderr.strip()[:300] or f"{m.location} was not created")
        written[id(m)] = dataclasses.replace(m, written=ok is True, write_error=error)
    return [written.get(id(m), m) for m in planned]


def _disk_markers(ctx: LiveContext, kind: str, instance: str, tag: str) -> list[Marker] | None:
    """A scale-set VM's data-disk and temporary-disk markers (planned, not written); None when the back end
    has no data disks (asm: LocalStorage instead)."""
    settings = ctx.target.reimage
    try:
        disks = ctx.backend.data_disks(instance)
    except ManagementError as exc:
        error = ctx.masker(f"the VM model's data disks could not be read: {exc}")[:400]
        return [Marker(DATA, "data disks", "storageProfile.dataDisks", write_error=error)]
    if disks is None:
        return None
    volumes = dict(settings.data_disks)
    temp = settings.temp_disk
    layout: guest_disks.GuestDisks | None = None
    query_error: str | None = None
    if any(d.lun not in volumes for d in disks) or temp.lower() == "auto":
        try:
            answers = ctx.winrm.batch(instance, list(guest_disks.QUERY))
        except WinRMError as exc:
            query_error = f"the guest's disks could not be read: {exc}"
        else:
            if answers[0] is None:
                query_error = (
                    "Get-Disk gave no disks (the Storage module: Windows Server 2012 or later); name the volumes "
                    "in reimage.data_disks and reimage.temp_disk"
                )
            layout = guest_disks.parse(*answers)
            ctx.evidence(f"{kind}-disks", _describe(disks, layout, volumes))
    out: list[Marker] = []
    for disk in disks:
        root: str | None = volumes.get(disk.lun)
        why: str | None = query_error
        if root is None and layout is not None and query_error is None:
            root, why = layout.data_disk(disk.lun)
        if root is None:
            skipped = f"data disk {disk.name} (LUN {disk.lun}): {why}"
            out.append(Marker(DATA, disk.name, f"LUN {disk.lun}", lun=disk.lun, skipped=skipped))
        else:
            out.append(Marker(DATA, disk.name, _under(root, tag), lun=disk.lun))
    if temp.lower() == "none":
        return out
    temp_root: str | None = None if temp.lower() == "auto" else temp
    temp_why: str | None = query_error
    if temp_root is None and layout is not None and query_error is None:
        temp_root, temp_why = layout.temporary_root()
    if temp_root is None:
        out.append(Marker(TEMP, "temporary disk", TEMP_LABEL, skipped=f"temporary disk: {temp_why}"))
    else:
        out.append(Marker(TEMP, "temporary disk", _under(temp_root, tag)))
    return out


def _under(root: str, tag: str) -> str:
    return f"{root.rstrip(chr(92))}\\vmrole-probe\\marker-{tag}.txt"


def _describe(disks: tuple[DataDisk, ...], layout: guest_disks.GuestDisks, volumes: dict[int, str]) -> str:
    lines = ["VM model data disks: " + (", ".join(f"LUN {d.lun} {d.name}" for d in disks) or "none")]
    lines += [f"reimage.data_disks: LUN {lun} -> {root}" for lun, root in sorted(volumes.items())]
    for d in layout.disks:
        shown = ", ".join(f"{v.root} {v.label!r}" for v in d.volumes) or "no volume"
        lines.append(
            f"guest disk {d.number}: {d.location or 'no location'} ({d.style or '?'}"
            f"{', boot' if d.boot else ''}): {shown}"
        )
    return "\n".join(lines)


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
    files = [m for m in markers if m.kind in FILE_KINDS and m.written]
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
        elif m.kind in FILE_KINDS:
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
    return dataclasses.replace(m, present_after=present, check_error=error)


def _cleanup(ctx: LiveContext, instance: str, markers: list[Marker], service: Any, container: Any) -> None:
    files = [m for m in markers if m.kind in FILE_KINDS and m.written and m.present_after is not False]
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
