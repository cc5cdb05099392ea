"""Persistence rules (VMR700-VMR719): what a reimage (VMR700-VMR708) and a reboot (VMR710-VMR712) keep.

They judge :class:`harness.facts.live.reimage.ReimageFacts` / ``RebootFacts`` (the destructive stages
``reimage`` and ``reboot``, run with ``--vmr-destructive``). Expectations follow the Reimage / Reboot Role
Instance operations and the local-storage documentation of Cloud Services (each rule's References).
"""

from __future__ import annotations

from collections.abc import Iterator

from harness.checks.live._naming import instance_label

from harness.docs_sources import refs
from harness.engine.artefact import DEPLOYMENT
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.live.reimage import BLOB, BLOB_FROM_INSTANCE, DATA, LOCAL, OS, TEMP, Marker, PersistenceFacts
from harness.facts.live.subject import LiveFacts, present

KINDS = frozenset({DEPLOYMENT})


def _verified(facts: PersistenceFacts) -> PersistenceFacts:
    """The facts when the operation succeeded and the markers were looked for again; else NotApplicable."""
    op = facts.operation
    if facts.setup_error or op is None:
        raise NotApplicable(f"the probe did not run: {facts.setup_error or 'no operation'}")
    if not (op.succeeded and op.ready):
        raise NotApplicable(f"the {op.kind} of {op.instance} did not complete (see the operation rule)")
    return facts


def _evidence(facts: PersistenceFacts, **extra: str) -> dict[str, str]:
    op = facts.operation
    out = {"instance": facts.instance or "", "role": facts.role or ""}
    if op is not None:
        out.update(request_id=op.request_id or "", status=op.status or "", last_status=op.last_status or "")
    out.update(extra)
    return out


class _OperationRule(Rule):
    attr = "reimage"

    def _check_operation(self, subject: LiveFacts, facts: PersistenceFacts) -> Iterator[Finding]:
        op = facts.operation
        if op is None:
            return
        where = f"instance {op.instance} / {op.kind}"
        who = instance_label(subject, op.instance)
        if op.start_error:
            message = f"the {op.kind} of {who} could not be started: {op.start_error}"
        elif op.timed_out:
            message = (
                f"the {op.kind} operation {op.request_id} of {who} was still {op.status} after "
                f"{op.deadline_seconds:.0f} s (the deadline)"
            )
        elif not op.succeeded:
            message = f"the {op.kind} operation {op.request_id} of {who} ended {op.status}" + (
                f": {op.error}" if op.error else ""
            )
        elif not op.ready:
            message = (
                f"after the {op.kind} (operation Succeeded) instance {who} was not ReadyRole within "
                f"{op.deadline_seconds:.0f} s; last status {op.last_status or 'unknown'}"
            )
        else:
            return
        yield self.finding(subject, where, message, evidence=_evidence(facts))


class ReimageOperationFailed(_OperationRule):
    """The reimage was not accepted, failed, or did not finish within the deadline.

    ## What it does
    Follows the Reimage Role Instance operation (Get Operation Status) until Succeeded or Failed, within
    ``reimage.timeout_seconds``; reports a refused start (after the 409 retries), a Failed operation or one
    still InProgress at the deadline.

    ## Why is this bad?
    A reimage is how a broken instance is repaired and how a Guest OS update reaches it: if it fails, the
    instance cannot be recovered by the platform.

    ## Example
    The operation ends ``Failed`` with ``InternalError``, or stays ``InProgress`` past the deadline.

    On a VM scale set (``management.api: vmss``) the operation is the scale-set VM's reimage, followed through
    its long-running-operation poller.

    ## Use instead
    Fix what the operation error names (image, configuration), then reimage again.

    ## References
    - Reimage Role Instance (Service Management REST API): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-reimage-role-instance
    - Cloud Services REST APIs (Service Management, classic): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/
    - Virtual Machine Scale Set VMs - Reimage (Azure REST API): https://learn.microsoft.com/en-us/rest/api/compute/virtual-machine-scale-set-vms/reimage
    """

    id = "VMR700"
    name = "reimage-operation-failed"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive")
    references = refs("sm-reimage", "sm-cloud-services-api", "vmss-vm-reimage")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = present(subject.reimage, "reimage")
        if facts.setup_error:
            raise NotApplicable(f"the reimage probe did not run: {facts.setup_error}")
        op = facts.operation
        if op is not None and (op.start_error or op.timed_out or not op.succeeded):
            yield from self._check_operation(subject, facts)


class ReimageInstanceNotReady(_OperationRule):
    """After a successful reimage the instance did not come back to ReadyRole within the deadline.

    ## What it does
    After the operation Succeeded, polls Get Deployment until the reimaged instance is ``ReadyRole`` again,
    within ``reimage.timeout_seconds`` of the start; reports the last status seen.

    ## Why is this bad?
    The instance stays out of the load balancer's rotation: the service runs with less capacity, or not at
    all when it has a single instance.

    ## Example
    The instance cycles ``BusyRole`` → ``RoleStateUnknown`` because the image's startup never completes.

    ## Use instead
    Make the image start its role (and report Ready) within the deadline; check the guest's event logs.

    ## References
    - Reimage Role Instance (Service Management REST API): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-reimage-role-instance
    - Get Deployment (Service Management REST API) — InstanceStatus: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    - Virtual Machine Scale Set VMs - Reimage (Azure REST API): https://learn.microsoft.com/en-us/rest/api/compute/virtual-machine-scale-set-vms/reimage
    """

    id = "VMR701"
    name = "reimage-instance-not-ready"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive")
    references = refs("sm-reimage", "sm-get-deployment", "vmss-vm-reimage")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = present(subject.reimage, "reimage")
        if facts.setup_error:
            raise NotApplicable(f"the reimage probe did not run: {facts.setup_error}")
        op = facts.operation
        if op is not None and op.succeeded and not op.ready:
            yield from self._check_operation(subject, facts)


class ReimageOsMarkerSurvived(Rule):
    """A file written to the OS drive survived a reimage: the reimage did not happen.

    ## What it does
    Writes ``C:\\vmrole-probe\\marker-<uuid>.txt`` before the reimage and looks for it after.

    ## Why is this bad?
    A reimage recreates the OS drive from the image (a scale-set VM's reimage resets its OS disk the same
    way). A marker still there means the instance was not reimaged, although the operation said Succeeded:
    repairs and Guest OS updates do not reach it.

    ## Example
    The marker is found after an operation that reported Succeeded.

    ## Use instead
    Investigate the platform (or emulator) operation; the instance must be recreated from its image.

    ## References
    - Reimage Role Instance (Service Management REST API): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-reimage-role-instance
    - Virtual Machine Scale Set VMs - Reimage (Azure REST API): https://learn.microsoft.com/en-us/rest/api/compute/virtual-machine-scale-set-vms/reimage
    - Virtual Machines - Reimage (Azure REST API): the OS disk is reset, its deleteOption decides the old one: https://learn.microsoft.com/en-us/rest/api/compute/virtual-machines/reimage
    """

    id = "VMR702"
    name = "reimage-os-marker-survived"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive")
    references = refs("sm-reimage", "vmss-vm-reimage", "vm-reimage")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _verified(present(subject.reimage, "reimage"))
        who = instance_label(subject, facts.instance)
        for m in facts.of_kind(OS):
            if m.present_after is True:
                yield self.finding(
                    subject,
                    f"instance {facts.instance} / {m.location}",
                    f"the OS-drive marker {m.location} survived the reimage of {who}: the OS drive was "
                    "not reset, so the reimage did not happen",
                    evidence=_evidence(facts, marker=m.location),
                )


class ReimageLocalStorageLost(Rule):
    """LocalStorage declared ``cleanOnRoleRecycle="false"`` lost its content on a reimage.

    ## What it does
    Writes a marker to each LocalStorage root (``C:\\Resources\\Directory\\<deploymentId>.<Role>.<Name>``)
    before the reimage; reports a resource with ``cleanOnRoleRecycle="false"`` whose marker is gone after.

    ## Why is this bad?
    Such local storage is normally kept on a reimage. Losing it is allowed (the platform may have moved the
    VM to other hardware), so this is a warning: an application relying on it will rebuild its cache or
    lose data it should have kept in blob storage. (A VM scale set has data disks instead, judged by
    VMR707.)

    ## Example
    ``<LocalStorage name="AppData" cleanOnRoleRecycle="false" />`` empty after the reimage.

    ## Use instead
    Treat local storage as a cache; keep durable state in blob storage.

    ## References
    - Configure local storage resources (Cloud Services classic) — cleanOnRoleRecycle: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-local-storage-resources
    - Reimage Role Instance (Service Management REST API): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-reimage-role-instance
    - Rebuild Role Instance (Service Management REST API, archived) — a rebuild re-creates local storage: https://learn.microsoft.com/en-us/previous-versions/azure/reference/dn627518(v=azure.100)
    """

    id = "VMR703"
    name = "reimage-local-storage-lost"
    severity = Severity.MEDIUM
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive", "local-storage")
    references = refs("cloud-services-local-storage", "sm-reimage", "sm-rebuild")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _verified(present(subject.reimage, "reimage"))
        who = instance_label(subject, facts.instance)
        for m in facts.of_kind(LOCAL):
            if m.clean_on_role_recycle is False and m.present_after is False:
                yield self.finding(
                    subject,
                    f"instance {facts.instance} / LocalStorage {m.name}",
                    f"LocalStorage {m.name!r} (cleanOnRoleRecycle=false) of {who} lost its marker on the reimage: "
                    "the platform may have moved the VM; do not rely on local storage for state",
                    evidence=_evidence(facts, resource=m.name, marker=m.location),
                )


class ReimageBlobMarkerLost(Rule):
    """A blob written before the reimage is gone after it.

    ## What it does
    Writes two blobs before the reimage, one with the storage SDK and one from inside the instance (a PUT
    to a SAS URL), and checks both still exist after.

    ## Why is this bad?
    Blob storage is where a stateless VM role (or scale-set VM) must keep its state: a reimage resets the
    instance's disks and leaves storage accounts alone, so losing a blob across a reimage means the storage
    account (or the configuration pointing at it) is not durable.

    ## Example
    The service's storage connection string points at a development or temporary account that is reset.

    ## Use instead
    Point the role at a durable storage account.

    ## References
    - Azure Storage redundancy: https://learn.microsoft.com/en-us/azure/storage/common/storage-redundancy
    - Reimage Role Instance (Service Management REST API): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-reimage-role-instance
    - Virtual Machine Scale Set VMs - Reimage (Azure REST API): https://learn.microsoft.com/en-us/rest/api/compute/virtual-machine-scale-set-vms/reimage
    """

    id = "VMR704"
    name = "reimage-blob-marker-lost"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive", "storage")
    references = refs("storage-redundancy", "sm-reimage", "vmss-vm-reimage")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _verified(present(subject.reimage, "reimage"))
        who = instance_label(subject, facts.instance)
        for m in facts.of_kind(BLOB) + facts.of_kind(BLOB_FROM_INSTANCE):
            if m.present_after is False:
                how = "from inside the instance" if m.kind == BLOB_FROM_INSTANCE else "with the storage SDK"
                yield self.finding(
                    subject,
                    f"blob {m.location}",
                    f"the blob marker {m.location} (written {how}) is gone after the reimage of {who}",
                    evidence=_evidence(facts, blob=m.location),
                )


class ReimageCleanStorageKept(Rule):
    """LocalStorage declared ``cleanOnRoleRecycle="true"`` kept its content across a reimage.

    ## What it does
    Reports (for information) a LocalStorage resource with ``cleanOnRoleRecycle="true"`` (the default)
    whose marker survived the reimage.

    ## Why is this bad?
    It is not harmful, but it differs from what the model declares: the application may find stale files
    it expects to be cleaned.

    ## Example
    ``<LocalStorage name="Scratch" cleanOnRoleRecycle="true" />`` still holding files after the reimage.

    ## Use instead
    Clean the folder at startup if the application depends on an empty scratch area.

    ## References
    - Configure local storage resources (Cloud Services classic) — cleanOnRoleRecycle: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-local-storage-resources
    """

    id = "VMR705"
    name = "reimage-clean-storage-kept"
    severity = Severity.INFO
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive", "local-storage")
    references = refs("cloud-services-local-storage")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _verified(present(subject.reimage, "reimage"))
        who = instance_label(subject, facts.instance)
        for m in facts.of_kind(LOCAL):
            if m.clean_on_role_recycle is True and m.present_after is True:
                yield self.finding(
                    subject,
                    f"instance {facts.instance} / LocalStorage {m.name}",
                    f"LocalStorage {m.name!r} (cleanOnRoleRecycle=true) of {who} kept its marker across the reimage",
                    evidence=_evidence(facts, resource=m.name, marker=m.location),
                )


def _volume(m: Marker) -> str:
    """The volume a disk marker was written on (``F:\\`` of ``F:\\vmrole-probe\\marker-….txt``)."""
    head = m.location.rsplit("\\vmrole-probe\\", 1)[0]
    return head if head.endswith("\\") else head + "\\"


class ReimageDataDiskLost(Rule):
    """A scale-set VM's data disk lost its content on a reimage.

    ## What it does
    On a VM scale set (``management.api: vmss``), reads the VM model's data disks (``storageProfile.dataDisks``:
    LUN and name), asks the guest which volume is on each LUN (the LUN in the disk's ``Location``, as
    ``Get-Disk`` shows it; or ``reimage.data_disks`` in the target file), writes
    ``<volume>\\vmrole-probe\\marker-<uuid>.txt`` before the reimage, and reports a marker gone after it.
    A data disk with no volume (raw, not initialized in the guest) cannot hold a marker: the rule does not
    apply to it (the reason names its LUN), it is not a failure.

    ## Why is this bad?
    A scale-set VM's reimage resets its OS disk and keeps its data disks: they are managed disks of their own,
    attached at their LUN again. A data disk that comes back empty means state the application put on it
    is gone, and the platform (or what the image runs at startup) did something a reimage does not do.

    ## Example
    The data disk at LUN 0 (``F:``) holds no files after the reimage: a startup script formats "new" disks
    without checking for an existing volume.

    ## Use instead
    Initialize a data disk only when it is raw (``PartitionStyle`` RAW); never format a disk that has a
    volume. Keep state that must outlive the VM in blob storage.

    ## References
    - Virtual Machine Scale Set VMs - Reimage (Azure REST API): https://learn.microsoft.com/en-us/rest/api/compute/virtual-machine-scale-set-vms/reimage
    - Azure Virtual Machine Scale Sets and attached data disks: https://learn.microsoft.com/en-us/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-attached-disks
    - How to map Azure Disks to Windows VM guest disks (the LUN in a disk's Location): https://learn.microsoft.com/en-us/azure/virtual-machines/windows/azure-to-guest-disk-mapping
    - Attach a managed data disk to a Windows VM (a new disk must be initialized in the guest): https://learn.microsoft.com/en-us/azure/virtual-machines/windows/attach-managed-disk-portal
    """

    id = "VMR707"
    name = "reimage-data-disk-lost"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive", "data-disk")
    references = refs("vmss-vm-reimage", "vmss-attached-disks", "vm-disk-mapping", "vm-attach-data-disk-windows")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _verified(present(subject.reimage, "reimage"))
        disks = facts.of_kind(DATA)
        if not disks:
            raise NotApplicable("no data disks: not a scale set, or its VM model lists none")
        skipped = [m for m in disks if m.skipped]
        if len(skipped) == len(disks):
            raise NotApplicable("; ".join(m.skipped or "" for m in skipped))
        who = instance_label(subject, facts.instance)
        for m in disks:
            where = f"instance {facts.instance} / data disk LUN {m.lun}"
            if m.skipped:  # beside disks that were judged: said, not failed
                yield self.finding(
                    subject,
                    where,
                    f"not judged on {who}: {m.skipped}",
                    evidence=_evidence(facts, disk=m.name, lun=str(m.lun)),
                    severity=Severity.INFO,
                )
            elif m.present_after is False:
                yield self.finding(
                    subject,
                    where,
                    f"the data disk {m.name!r} (LUN {m.lun}, {_volume(m)}) of {who} lost its marker on the reimage: "
                    "a scale-set VM's reimage keeps its data disks",
                    evidence=_evidence(facts, disk=m.name, lun=str(m.lun), marker=m.location),
                )


class ReimageTempDiskOutcome(Rule):
    """What a reimage did to a scale-set VM's temporary disk (for information: nothing is guaranteed).

    ## What it does
    On a VM scale set, writes ``<volume>\\vmrole-probe\\marker-<uuid>.txt`` to the temporary disk (the volume
    the guest labels ``Temporary Storage``, usually ``D:``; or ``reimage.temp_disk``) before the reimage and
    reports whether it was still there after. A VM size without a temporary disk, or ``reimage.temp_disk:
    none``, makes the rule not apply.

    ## Why is this bad?
    It is not: the temporary disk is scratch space whose content Azure does not promise to keep (a
    maintenance event, a redeploy or a move to other hardware empties it; a reimage's ``tempDisk`` option
    exists only for VMs with an ephemeral OS disk). The finding says what happened this time so that an
    application that silently relies on it (or on it being empty) is noticed.

    ## Example
    ``the temporary disk (D:\\) of web000002 (instance 2) kept its marker across the reimage``.

    ## Use instead
    Keep only what can be rebuilt on the temporary disk (page file, caches); rebuild at startup whatever the
    application expects there.

    ## References
    - Introduction to Azure managed disks - Temporary disk: https://learn.microsoft.com/en-us/azure/virtual-machines/managed-disks-overview#temporary-disk
    - Virtual Machine Scale Set VMs - Reimage (Azure REST API): https://learn.microsoft.com/en-us/rest/api/compute/virtual-machine-scale-set-vms/reimage
    - Ephemeral OS disks for Azure VMs: https://learn.microsoft.com/en-us/azure/virtual-machines/ephemeral-os-disks
    """

    id = "VMR708"
    name = "reimage-temp-disk-outcome"
    severity = Severity.INFO
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive", "data-disk")
    references = refs("vm-temporary-disk", "vmss-vm-reimage", "ephemeral-os-disks")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _verified(present(subject.reimage, "reimage"))
        temps = facts.of_kind(TEMP)
        if not temps:
            raise NotApplicable("no temporary disk marker: not a scale set, or reimage.temp_disk is none")
        who = instance_label(subject, facts.instance)
        for m in temps:
            if m.skipped:
                raise NotApplicable(m.skipped)
            if m.present_after is None:
                continue  # not written or not checked: VMR706 says why
            what = "kept its marker across" if m.present_after else "lost its marker on"
            yield self.finding(
                subject,
                f"instance {facts.instance} / temporary disk",
                f"the temporary disk ({_volume(m)}) of {who} {what} the reimage (a temporary disk's content is "
                "not guaranteed: keep nothing there that cannot be rebuilt)",
                evidence=_evidence(facts, marker=m.location, kept=str(m.present_after).lower()),
            )


class _ProbeIncomplete(Rule):
    attr = "reimage"

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        stage = subject.reboot if self.attr == "reboot" else subject.reimage
        facts: PersistenceFacts = present(stage, self.attr)
        if facts.setup_error:
            yield self.finding(
                subject,
                f"instance {facts.instance or '?'}",
                f"the {self.attr} probe could not run: {facts.setup_error}",
                evidence=_evidence(facts),
            )
            return
        for m in facts.markers:
            if m.skipped:  # the expectation does not apply (VMR707/VMR708 say why): not a probe failure
                continue
            if not m.written:
                message = f"the {m.kind} marker {m.location} could not be written: {m.write_error}"
            elif m.check_error and m.present_after is None:
                message = (
                    f"the {m.kind} marker {m.location} could not be checked after the {self.attr}: {m.check_error}"
                )
            else:
                continue
            yield self.finding(
                subject,
                f"instance {facts.instance} / {m.location}",
                message,
                evidence=_evidence(facts),
                severity=Severity.INFO if m.kind == TEMP else None,  # nothing is promised about that disk
            )


class ReimageProbeIncomplete(_ProbeIncomplete):
    """The reimage probe could not write or check one of its markers.

    ## What it does
    Reports a probe that could not start (no Ready instance, WinRM unreachable) and every marker that could
    not be written before the reimage or checked after it, naming the cause (a scale-set VM's temporary-disk
    marker only for information: nothing is promised about that disk).

    ## Why is this bad?
    The persistence expectation for that marker is not verified. A blob that cannot be written from inside
    the instance also means the role cannot reach its storage.

    ## Example
    ``Invoke-WebRequest`` from the instance fails with ``(403) Forbidden``, or a LocalStorage root is missing.

    ## Use instead
    Fix the cause named (network access to storage, the LocalStorage declaration, WinRM credentials).

    ## References
    - Reimage Role Instance (Service Management REST API): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-reimage-role-instance
    - Configure local storage resources (Cloud Services classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-local-storage-resources
    """

    id = "VMR706"
    name = "reimage-probe-incomplete"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reimage",)
    tags = ("live", "reimage", "destructive")
    references = refs("sm-reimage", "cloud-services-local-storage")
    attr = "reimage"


class RebootOperationFailed(_OperationRule):
    """The reboot was not accepted, failed, or the instance was not ReadyRole again within the deadline.

    ## What it does
    Follows the Reboot Role Instance operation to Succeeded and the instance back to ``ReadyRole`` within
    ``reimage.timeout_seconds``.

    ## Why is this bad?
    An instance that does not come back from a reboot is out of rotation until someone repairs it.

    ## Example
    The operation ends ``Failed``, or the instance stays ``BusyRole`` after it.

    ## Use instead
    Fix what the operation error or the instance status names.

    ## References
    - Reboot Role Instance (Service Management REST API, archived): https://learn.microsoft.com/en-us/previous-versions/azure/reference/gg441298(v=azure.100)
    - Get Deployment (Service Management REST API) — InstanceStatus: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    - Virtual Machine Scale Set VMs - Restart (Azure REST API): https://learn.microsoft.com/en-us/rest/api/compute/virtual-machine-scale-set-vms/restart
    """

    id = "VMR710"
    name = "reboot-operation-failed"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reboot",)
    tags = ("live", "reboot", "destructive")
    references = refs("sm-reboot", "sm-get-deployment", "vmss-vm-restart")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = present(subject.reboot, "reboot")
        if facts.setup_error:
            raise NotApplicable(f"the reboot probe did not run: {facts.setup_error}")
        yield from self._check_operation(subject, facts)


class RebootLostState(Rule):
    """A reboot lost state that a reboot keeps: the OS drive, kept local storage, or blobs.

    ## What it does
    Writes the same markers as the reimage probe, reboots the instance and reports any marker gone after:
    the OS drive, LocalStorage with ``cleanOnRoleRecycle="false"`` and the blobs must all be kept
    (``cleanOnRoleRecycle="true"`` storage may be cleaned on a recycle and is not judged).

    ## Why is this bad?
    A reboot (host OS servicing does one) must not lose data: losing it means the VM was recreated
    instead, or something in the image wipes state at startup.

    ## Example
    A startup script that empties ``C:\\vmrole-probe``-like folders, or an emulator that reimages on reboot.

    ## Use instead
    Do not clean state at startup; check what recreates the VM.

    ## References
    - Reboot Role Instance (Service Management REST API, archived): https://learn.microsoft.com/en-us/previous-versions/azure/reference/gg441298(v=azure.100)
    - Configure local storage resources (Cloud Services classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-local-storage-resources
    """

    id = "VMR711"
    name = "reboot-lost-state"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reboot",)
    tags = ("live", "reboot", "destructive")
    references = refs("sm-reboot", "cloud-services-local-storage")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _verified(present(subject.reboot, "reboot"))
        who = instance_label(subject, facts.instance)
        for m in facts.markers:
            if m.present_after is not False:
                continue
            if (m.kind == LOCAL and m.clean_on_role_recycle) or m.kind == TEMP:  # neither is promised
                continue
            what = {
                OS: "OS-drive marker",
                LOCAL: f"LocalStorage {m.name!r} marker",
                DATA: f"data disk {m.name!r} (LUN {m.lun}) marker",
            }.get(m.kind, "blob marker")
            yield self.finding(
                subject,
                f"instance {facts.instance} / {m.location}",
                f"the {what} {m.location} is gone after the reboot of {who}: a reboot keeps it",
                evidence=_evidence(facts, marker=m.location),
            )


class RebootProbeIncomplete(_ProbeIncomplete):
    """The reboot probe could not write or check one of its markers.

    ## What it does
    Reports a reboot probe that could not start and every marker that could not be written before the
    reboot or checked after it, naming the cause.

    ## Why is this bad?
    The persistence expectation for that marker is not verified.

    ## Example
    WinRM to the chosen instance fails, so no marker can be written.

    ## Use instead
    Fix the cause named (WinRM credentials, storage access, the LocalStorage declaration).

    ## References
    - Reboot Role Instance (Service Management REST API, archived): https://learn.microsoft.com/en-us/previous-versions/azure/reference/gg441298(v=azure.100)
    """

    id = "VMR712"
    name = "reboot-probe-incomplete"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("reboot",)
    tags = ("live", "reboot", "destructive")
    references = refs("sm-reboot")
    attr = "reboot"
