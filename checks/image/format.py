"""Image format rules (01x): container, size, OS and architecture, per profile."""

from __future__ import annotations

from collections.abc import Iterator

from harness.docs_sources import refs
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable
from harness.engine.severity import Severity
from harness.facts.image import AZURE, VMROLE, ImageFacts, ImageSubject

from ._base import AZURE_ONLY, BOTH, VMROLE_ONLY, ImageRule, missing_part_reason

MIB = 1024 * 1024
GIB = 1024 * MIB
TIB = 1024 * GIB
#: VM-role image caps per VM size, as 2011 blog posts on the VM role give them (no official page survives):
#: reported, not enforced hard.
VMROLE_SIZE_CAPS = {"extrasmall": 15 * GIB, "small": 30 * GIB}
VMROLE_DEFAULT_CAP = 64 * GIB
AZURE_OS_DISK_CAP = 2 * TIB


#: Other hypervisors' containers the readers recognise but do not read (their qemu-img format names).
FOREIGN_FORMATS = {"qcow2": "QCOW2", "vmdk": "VMDK", "vdi": "VDI"}


def _container(subject: ImageSubject) -> str:
    return subject.artefact.display


def no_windows(facts: ImageFacts) -> bool:
    """The image was read and holds no Windows installation: VMR018 is then its one verdict."""
    return not facts.windows_found and ("volume" in facts.parts_read or bool(facts.contents))


def _not_without_windows(facts: ImageFacts) -> None:
    """A disk read and found to hold no Windows gets VMR018 alone."""
    if no_windows(facts):
        raise NotApplicable("the image holds no Windows installation: VMR018 is its verdict")


def _only_windows_disks(facts: ImageFacts) -> None:
    """Container rules judge Windows disks: a disk without Windows gets VMR018 alone, a container that was not
    read (QCOW2, VMDK, VDI) VMR013 alone."""
    _not_without_windows(facts)
    fmt = facts.container.format
    if fmt in FOREIGN_FORMATS:
        raise NotApplicable(f"the {FOREIGN_FORMATS[fmt]} container is not read: VMR013 is its verdict")


def conversion(fmt: str, name: str) -> str:
    """Azure's documented conversion of another format to a fixed VHD (Linux "Resizing VHDs"), for ``name``."""
    return f"qemu-img convert -f {fmt} -O vpc -o subformat=fixed,force_size {name} {_vhd_name(name)}"


def _vhd_name(name: str) -> str:
    """The converted file's name: ``disk.img`` → ``disk.vhd`` (``disk-fixed.vhd`` when that is the input)."""
    return _renamed(name, "vhd", "fixed")


def _renamed(name: str, ext: str, clash: str) -> str:
    """``name`` with the extension ``ext``, or ``STEM-clash.ext`` when that would be ``name`` itself."""
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{stem}.{ext}" if f"{stem}.{ext}" != name else f"{stem}-{clash}.{ext}"


class VhdFooterInvalid(ImageRule):
    """The VHD footer (or its copy at the start of a dynamic VHD) is damaged.

    ## What it does
    Checks the 512-byte VHD footer: its checksum (one's complement of the byte sum), its length (a
    511-byte footer, as Virtual PC wrote before 2004, is reported) and, for dynamic and differencing
    disks, that the copy at offset 0 equals the footer at the end.

    ## Why is this bad?
    Upload tools and Azure validate the footer; a bad checksum is rejected as "not a supported VHD",
    and Hyper-V refuses to attach the disk. A damaged footer also suggests the file was cut or
    edited in transit.

    ## Example
    A fixed VHD whose footer checksum field does not match its bytes.

    ## Use instead
    Re-create the VHD from its source (`Convert-VHD`, or
    `qemu-img convert -O vpc -o subformat=fixed,force_size=on`), then copy it again with a
    checksum-verified transfer.

    ## References
    - Virtual Hard Disk Image Format Specification (Microsoft, v1.0) — "Hard Disk Footer Format": https://www.microsoft.com/en-us/download/details.aspx?id=23850
    - Prepare a Windows VHD or VHDX to upload to Azure: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    """

    id = "VMR010"
    name = "vhd-footer-invalid"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("container",)
    references = refs("vhd-spec", "azure-prepare-vhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        _only_windows_disks(facts)
        info = facts.container
        if info.format != "vhd":
            return
        if info.disk_type == "fixed" and info.file_size - info.virtual_size == 511:
            yield self.finding(
                subject,
                "VHD footer",
                "the VHD footer is 511 bytes (as Virtual PC wrote it before 2004); upload tools expect 512: "
                "re-create the VHD",
                evidence={"file size": str(info.file_size), "virtual size": str(info.virtual_size)},
            )
        if info.footer_checksum_ok is False:
            yield self.finding(subject, "VHD footer", "the VHD footer checksum is wrong: re-create the VHD")
        if info.footer_copy_ok is False:
            yield self.finding(
                subject, "VHD footer copy (offset 0)", "the footer copy at offset 0 differs from the footer at the end"
            )


class ImageNotFixedVhd(ImageRule):
    """Azure accepts only fixed-size VHDs for upload.

    ## What it does
    Reports a dynamic or differencing VHD linted with the azure profile.

    ## Why is this bad?
    Azure rejects dynamic and differencing VHDs for managed-disk and image upload.

    ## Example
    `disk.vhd` created with `qemu-img convert -O vpc` (dynamic by default).

    ## Use instead
    `Convert-VHD -Path disk.vhd -DestinationPath fixed.vhd -VHDType Fixed`, or
    `qemu-img convert -O vpc -o subformat=fixed,force_size=on disk.vhd fixed.vhd`.

    ## References
    - Prepare a Windows VHD or VHDX to upload to Azure — fixed-size VHD only: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    - Add-AzVhd (Az.Compute): upload a VHD to Azure: https://learn.microsoft.com/en-us/powershell/module/az.compute/add-azvhd
    """

    id = "VMR011"
    name = "image-not-fixed-vhd"
    severity = Severity.HIGH
    profiles = AZURE_ONLY
    parts = ("container",)
    references = refs("azure-prepare-vhd", "add-azvhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        _only_windows_disks(facts)
        info = facts.container
        if info.format == "vhd" and info.disk_type != "fixed":
            yield self.finding(
                subject,
                "VHD footer",
                f"{_container(subject)} is a {info.disk_type} VHD; Azure accepts only fixed VHDs: convert it "
                "(Convert-VHD -VHDType Fixed)",
                evidence={"disk type": str(info.disk_type)},
            )


class DifferencingImage(ImageRule):
    """A VM-role image must be a standalone VHD, not a differencing disk.

    ## What it does
    Reports a differencing VHD (a child that needs its parent chain) linted with the vmrole profile.

    ## Why is this bad?
    `csupload Add-VMImage` uploads one file; a differencing disk is meaningless without its parent,
    so the uploaded image would not boot. (csupload converts dynamic VHDs to fixed on the fly, so a
    dynamic VHD is fine here.)

    ## Example
    `app.vhd` whose parent locator points at `base.vhd`.

    ## Use instead
    Merge the chain into one disk first: `Merge-VHD`, or `qemu-img convert -O vpc child.vhd merged.vhd`.

    ## References
    - Virtual Hard Disk Image Format Specification (Microsoft, v1.0) — "Differencing Hard Disk Image": https://www.microsoft.com/en-us/download/details.aspx?id=23850
    - About the Windows Azure Integration Components (VM role, archived): https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    """

    id = "VMR012"
    name = "differencing-image"
    severity = Severity.HIGH
    profiles = VMROLE_ONLY
    parts = ("container",)
    references = refs("vhd-spec", "vmrole-ic")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        _only_windows_disks(facts)
        info = facts.container
        if info.disk_type == "differencing":
            chain = " → ".join([_container(subject), *info.parent_chain])
            yield self.finding(
                subject,
                "VHD footer",
                f"{_container(subject)} is a differencing disk ({chain}): merge the chain into one VHD before upload",
                evidence={"parent chain": chain},
            )


class ImageNotVhd(ImageRule):
    """Images must be uploaded as VHD files, not VHDX, raw disks or other hypervisors' images.

    ## What it does
    Reports an image whose container is VHDX or a raw disk (a raw disk carrying a stray VHD footer,
    e.g. a volume copied out of a fixed VHD together with its footer, is named as such), and a
    QCOW2, VMDK or VDI image under any file name. The format is told by the file's bytes, not its
    name. The contents of a QCOW2, VMDK or VDI image are not read: this is then the image's one
    finding, with the conversion command.

    ## Why is this bad?
    Azure's upload path (and the VM role's csupload) take only the VHD format; a VHDX, raw disk or
    another hypervisor's image is rejected before any of its contents are looked at.

    ## Example
    `server.vhdx` exported from Hyper-V Manager; `disk.img` that is really a QCOW2 image.

    ## Use instead
    `Convert-VHD -Path server.vhdx -DestinationPath server.vhd -VHDType Fixed`, or
    `qemu-img convert -O vpc -o subformat=fixed,force_size=on server.vhdx server.vhd`; for another
    format, as Azure documents it:
    `qemu-img convert -f qcow2 -O vpc -o subformat=fixed,force_size disk.img disk.vhd`
    (`-f vmdk`, `-f vdi`, `-f raw` likewise), then lint the VHD.

    ## References
    - Prepare a Windows VHD or VHDX to upload to Azure — VHDX is not supported: convert to VHD: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    - Virtual Hard Disk Image Format Specification (Microsoft, v1.0): https://www.microsoft.com/en-us/download/details.aspx?id=23850
    - [MS-VHDX]: Virtual Hard Disk v2 (VHDX) File Format: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/83e061f8-f6e2-4de1-91bd-5d518a43d477
    - Prepare Linux for imaging in Azure — Resizing VHDs (qemu-img convert to a fixed VHD): https://learn.microsoft.com/en-us/azure/virtual-machines/linux/create-upload-generic#resizing-vhds
    """

    id = "VMR013"
    name = "image-not-vhd"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("container",)
    references = refs("azure-prepare-vhd", "vhd-spec", "ms-vhdx", "azure-resize-vhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        _not_without_windows(facts)
        info = facts.container
        fmt = info.format
        name = _container(subject)
        if fmt in FOREIGN_FORMATS:
            command = conversion(fmt, name)
            yield self.finding(
                subject,
                "container",
                f"{name} is {info.detected or FOREIGN_FORMATS[fmt] + ' image'}, not a VHD: its contents were not "
                f"read. Convert it to a fixed VHD (as Azure documents): `{command}`, then lint the VHD",
                evidence={"format": fmt, "detected": info.detected or fmt, "convert": command},
            )
            return
        if fmt == "raw" and info.detected and info.virtual_size < info.file_size:
            data = _renamed(name, "raw", "data")
            command = f"head -c {info.virtual_size} {name} > {data} && {conversion('raw', data)}"
            yield self.finding(
                subject,
                "container",
                f"{name} is {info.detected}, not a VHD: copy the data without the footer and convert it to a fixed "
                f"VHD: `{command}`",
                evidence={"format": fmt, "detected": info.detected, "convert": command},
            )
            return
        if fmt != "vhd":
            yield self.finding(
                subject,
                "container",
                f"{_container(subject)} is a {fmt.upper()} image; upload takes VHD only: convert it to a fixed VHD",
                evidence={"format": fmt},
            )


class SizeNotMibAligned(ImageRule):
    """The virtual disk size must be a whole number of MiB.

    ## What it does
    Reports a virtual size that is not a multiple of 1,048,576 bytes (azure profile).

    ## Why is this bad?
    Azure rejects the upload ("… is not aligned to 1 MB"). Tools that round to CHS geometry
    (`qemu-img` without `force_size=on`) produce such sizes silently.

    ## Example
    A VHD of 1,048,707,072 bytes (1,000 MiB rounded up to a CHS geometry).

    ## Use instead
    `Resize-VHD -SizeBytes <multiple of 1 MiB>`, or convert with `qemu-img … -o force_size=on` from a
    disk whose size is already a multiple of 1 MiB.

    ## References
    - Prepare a Windows VHD or VHDX to upload to Azure — the virtual size must be a whole number of MiB: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    - Add-AzVhd (Az.Compute): upload a VHD to Azure — N × 1 MiB + 512 bytes: https://learn.microsoft.com/en-us/powershell/module/az.compute/add-azvhd
    """

    id = "VMR014"
    name = "size-not-mib-aligned"
    severity = Severity.HIGH
    profiles = AZURE_ONLY
    parts = ("container",)
    references = refs("azure-prepare-vhd", "add-azvhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        _only_windows_disks(facts)
        size = facts.container.virtual_size
        if size % MIB:
            yield self.finding(
                subject,
                "VHD footer current size",
                f"virtual size {size:,} bytes is not a multiple of 1 MiB: resize to {(-(-size // MIB)) * MIB:,} bytes",
                evidence={"virtual size": str(size), "remainder": str(size % MIB)},
            )


class SizeOverLimit(ImageRule):
    """The virtual disk is larger than the platform accepts.

    ## What it does
    Azure profile: the OS disk must be at most 2 TiB. VM-role profile: the image must fit the VM
    size's cap (15 GB ExtraSmall, 30 GB Small, 64 GB otherwise; from the paired role's vmsize when a
    service model is given).

    ## Why is this bad?
    The upload or the deployment is rejected, after a long upload. The Azure limit is documented; the
    VM-role caps are the ones 2011 write-ups of the VM role give (no official page survives), so a
    VM-role finding is a strong hint rather than a certainty.

    ## Example
    A 100 GB VM-role image for a Small role.

    ## Use instead
    Shrink the volume (`Resize-Partition`, then `Resize-VHD -ToMinimumSize`) or choose a larger VM size.

    ## References
    - Prepare a Windows VHD or VHDX to upload to Azure: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    - Add-AzVhd (Az.Compute): upload a VHD to Azure: https://learn.microsoft.com/en-us/powershell/module/az.compute/add-azvhd
    """

    id = "VMR015"
    name = "size-over-limit"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("container",)
    references = refs("azure-prepare-vhd", "add-azvhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        _only_windows_disks(facts)
        size = facts.container.virtual_size
        if subject.profile == AZURE:
            cap, why, severity = AZURE_OS_DISK_CAP, "Azure's 2 TiB OS-disk limit", self.severity
        else:
            vmsize = (subject.role.vmsize if subject.role is not None else None) or ""
            cap = VMROLE_SIZE_CAPS.get(vmsize.lower(), VMROLE_DEFAULT_CAP)
            why = f"the VM-role cap for {vmsize or 'the largest VM sizes'} ({cap // GIB} GB, unconfirmed)"
            severity = Severity.MEDIUM
        if size > cap:
            yield self.finding(
                subject,
                "VHD footer current size",
                f"virtual size {size / GIB:.1f} GiB is over {why}",
                evidence={"virtual size": str(size), "cap": str(cap)},
                severity=severity,
            )


class OsNotSupported(ImageRule):
    """The image's Windows version is not one the profile deploys.

    ## What it does
    VM-role profile: Windows Server 2008 R2 (6.1, server) is required. Azure profile: Windows Server
    2008 R2 SP1 or later (6.1 build 7601+), server or client.

    ## Why is this bad?
    The VM role's integration components only exist for Windows Server 2008 R2; Azure's
    provisioning agent and drivers need 2008 R2 SP1 or later. Anything else fails to provision.

    ## Example
    A Windows Server 2008 (6.0) image, or 2008 R2 RTM (build 7600) for Azure.

    ## Use instead
    Build the image from a supported release (install SP1 on 2008 R2 for Azure).

    ## References
    - About the Windows Azure Integration Components (VM role, archived) — Windows Server 2008 R2 images only: https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    - Prepare a Windows VHD or VHDX to upload to Azure: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    - Azure Virtual Machine Agent overview (Windows) — supported operating systems: https://learn.microsoft.com/en-us/azure/virtual-machines/extensions/agent-windows
    """

    id = "VMR016"
    name = "os-not-supported"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("os",)
    references = refs("vmrole-ic", "azure-prepare-vhd", "azure-vm-agent")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        os_info = facts.os
        assert os_info is not None
        version = (os_info.current_version or "").strip()
        build = os_info.build_number
        name = os_info.product_name or "unknown Windows"
        location = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
        evidence = {"ProductName": name, "CurrentVersion": version or "-", "build": str(build or "-")}
        if subject.profile == VMROLE:
            if version != "6.1" or os_info.is_server is False:
                yield self.finding(
                    subject,
                    location,
                    f"{name} ({version or '?'}): a VM role needs Windows Server 2008 R2",
                    evidence=evidence,
                )
            return
        try:
            parsed = tuple(int(x) for x in version.split(".")[:2]) if version else ()
        except ValueError:
            parsed = ()
        if not parsed or parsed < (6, 1) or (parsed == (6, 1) and (build or 0) < 7601):
            yield self.finding(
                subject,
                location,
                f"{name} ({version or '?'} build {build or '?'}): Azure needs Windows Server 2008 R2 SP1 or later",
                evidence=evidence,
            )


class OsNot64Bit(ImageRule):
    """The image is not a 64-bit (x64) Windows.

    ## What it does
    Reads the architecture from `PROCESSOR_ARCHITECTURE` in the SYSTEM hive (or the PE header of
    `ntoskrnl.exe`/`cmd.exe`) and reports anything but x64.

    ## Why is this bad?
    VM-role integration components shipped only for x64, and Azure does not run 32-bit Windows.

    ## Example
    `PROCESSOR_ARCHITECTURE = x86`.

    ## Use instead
    Build the image from the x64 edition.

    ## References
    - About the Windows Azure Integration Components (VM role, archived): https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    - Prepare a Windows VHD or VHDX to upload to Azure: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    """

    id = "VMR017"
    name = "os-not-64-bit"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("os",)
    references = refs("vmrole-ic", "azure-prepare-vhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        assert facts.os is not None
        arch = facts.os.architecture
        if arch is None:
            yield self.finding(
                subject,
                "Session Manager\\Environment",
                "the architecture could not be determined (no PROCESSOR_ARCHITECTURE, no readable PE header)",
                severity=Severity.LOW,
            )
        elif arch != "x64":
            yield self.finding(
                subject,
                facts.os.architecture_source or "architecture",
                f"the image is {arch}; only x64 Windows is supported",
                evidence={"architecture": arch},
            )


class NoWindowsInstallation(ImageRule):
    """No Windows installation was found on the image.

    ## What it does
    Reports an image whose NTFS volumes hold no `Windows\\System32\\config` hives, and an image
    with no NTFS volume at all, naming what it holds instead: a Linux file system (ext2/3/4, XFS,
    btrfs), an LVM physical volume, a swap area, an ISO 9660 CD/DVD image, or partitions of those,
    whatever the layout (bare, MBR, GPT) or container. This is such an image's one finding: the
    container rules (VMR010-VMR015) do not judge a disk that holds no Windows.

    ## Why is this bad?
    The disk cannot boot as a VM-role or Azure OS disk; it may be a data disk, a Linux disk or an
    installation medium uploaded by mistake. Converting its format would not help.

    ## Example
    A VHD with one NTFS volume holding only application data; `disk.img` holding an ext4 file
    system; a Windows installation ISO.

    ## Use instead
    Point the linter at the OS disk (the VHD the role boots from). From an ISO, install Windows in
    a VM, generalize it with sysprep, and upload that VM's OS disk.

    ## References
    - Prepare a Windows VHD or VHDX to upload to Azure: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    - Sysprep (Generalize) a Windows installation: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep--generalize--a-windows-installation
    """

    id = "VMR018"
    name = "no-windows-installation"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("partitions",)
    references = refs("azure-prepare-vhd", "sysprep-generalize")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        if facts.windows_found:
            return
        if facts.contents:
            contents = "; ".join(facts.contents)
            yield self.finding(
                subject,
                "disk",
                f"no Windows installation on the image: it has no NTFS volume; it holds {contents}. A VM-role or "
                "Azure image must be a Windows OS disk",
                evidence={"contents": contents},
            )
            return
        if "volume" not in facts.parts_read:
            raise NotApplicable(missing_part_reason(facts, "volume"))
        yield self.finding(
            subject,
            "\\Windows\\System32\\config",
            "no Windows installation on the image's NTFS volume (no SYSTEM or SOFTWARE hive)",
        )
