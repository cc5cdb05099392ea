"""What an image file is, from its bytes: the container and volume signatures, never the file name alone.

``detect(source)`` looks at a handful of fixed offsets (no scan, a few KiB read) and answers with a
:class:`Detected`. The order, each step only when the ones before found nothing:

1. an empty file;
2. headers at offset 0: VHDX (``vhdxfile``), dynamic VHD (``conectix``), QCOW2 (``QFI\\xfb``), VMDK (``KDMV``
   or ``COWD`` sparse header, or a ``# Disk DescriptorFile`` text descriptor), VDI (the ``<<< Oracle VM
   VirtualBox Disk Image >>>`` banner or the signature 0xbeda107f at 0x40);
3. a VHD footer (``conectix``) in the last 512 bytes or, as Virtual PC before 2004 wrote it, the last 511;
4. what the data itself holds (:func:`detect_volume`): an NTFS boot sector, a GPT, an MBR with a sane entry,
   ISO 9660, ext2/3/4, XFS, btrfs, an LVM physical volume, Linux swap, then any 0x55AA boot sector;
5. all zeros (the first and last MiB and samples between), else unknown.

The file name is only a tie-breaker, in :mod:`container` (a partitioned disk without a footer named
``.vhd`` is a truncated fixed VHD), never the only evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.readers.image.source import ByteSource

__all__ = [
    "FOREIGN",
    "NON_WINDOWS",
    "Detected",
    "conversion_command",
    "detect",
    "detect_volume",
    "footer_offset",
    "not_an_image",
    "volume_extent",
]

SECTOR = 512
MIB = 1024 * 1024

#: Containers of other hypervisors: the disk inside is not read; the fix is a conversion to VHD.
FOREIGN = ("qcow2", "vmdk", "vdi")
#: Contents that cannot hold a Windows installation.
NON_WINDOWS = ("iso9660", "ext", "xfs", "btrfs", "lvm", "swap")


@dataclass(frozen=True)
class Detected:
    """``kind``: "empty", "vhdx", "vhd", "qcow2", "vmdk", "vdi", "ntfs", "partitioned", one of
    :data:`NON_WINDOWS`, "zeros" or "unknown". ``name``: the kind in words ("a QCOW2 image (version 3)").
    ``evidence``: what was seen where ("'QFI\\xfb' at offset 0")."""

    kind: str
    name: str
    evidence: str

    @property
    def foreign(self) -> bool:
        return self.kind in FOREIGN

    @property
    def non_windows(self) -> bool:
        return self.kind in NON_WINDOWS


def conversion_command(kind: str, file_name: str) -> str:
    """The conversion Azure documents for other formats (Linux "Resizing VHDs": ``qemu-img convert -f raw -o
    subformat=fixed,force_size -O vpc``), for this file."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name.lstrip(".") else file_name
    out = f"{stem}.vhd" if f"{stem}.vhd" != file_name else f"{stem}-fixed.vhd"
    return f"qemu-img convert -f {kind} -O vpc -o subformat=fixed,force_size {file_name} {out}"


def footer_offset(source: ByteSource) -> int | None:
    """Where a VHD footer (``conectix``) starts: the last 512 bytes, or the last 511 (the footer Virtual PC
    wrote before 2004); None without one."""
    size = source.size
    if size >= SECTOR and source.read_at(size - SECTOR, 8) == b"conectix":
        return size - SECTOR
    if size >= SECTOR - 1 and source.read_at(size - SECTOR + 1, 8) == b"conectix":
        return size - SECTOR + 1
    return None


def _le(data: bytes, off: int, n: int) -> int:
    return int.from_bytes(data[off : off + n], "little")


def _header(source: ByteSource) -> Detected | None:
    head = source.read_at(0, SECTOR)
    if head[:8] == b"vhdxfile":
        return Detected("vhdx", "a VHDX image", "'vhdxfile' at offset 0")
    if head[:8] == b"conectix":
        return Detected("vhd", "a dynamic or differencing VHD", "'conectix' (footer copy) at offset 0")
    if head[:4] == b"QFI\xfb":
        version = int.from_bytes(head[4:8], "big")
        return Detected("qcow2", f"a QCOW2 image (version {version})", "'QFI\\xfb' at offset 0")
    if head[:4] in (b"KDMV", b"COWD"):
        return Detected("vmdk", "a VMDK image (sparse extent)", f"{head[:4].decode()!r} at offset 0")
    if head[:21] == b"# Disk DescriptorFile":
        return Detected("vmdk", "a VMDK descriptor file", "'# Disk DescriptorFile' at offset 0")
    if head[:39] == b"<<< Oracle VM VirtualBox Disk Image >>>" or _le(head, 0x40, 4) == 0xBEDA107F:
        return Detected("vdi", "a VirtualBox VDI image", "VDI signature 0xbeda107f at offset 0x40")
    return None


def _mbr_entries(sector: bytes) -> list[tuple[int, int, int]]:
    """(type, first LBA, sector count) of the MBR's used entries."""
    out = []
    for i in range(4):
        e = sector[446 + 16 * i : 462 + 16 * i]
        if e[4] and _le(e, 12, 4) and e[0] in (0, 0x80):
            out.append((e[4], _le(e, 8, 4), _le(e, 12, 4)))
    return out


def detect_volume(source: ByteSource) -> Detected | None:
    """What the bytes of a disk or a partition hold, by the file-system and partition-table signatures at their
    fixed offsets; None when none is there."""
    boot = source.read_at(0, SECTOR)
    if boot[3:11] == b"NTFS    ":
        return Detected("ntfs", "an NTFS volume", "'NTFS    ' OEM id at offset 3")
    for ss in (SECTOR, 4096):
        if source.read_at(ss, 8) == b"EFI PART":
            return Detected("partitioned", "a disk with a GPT partition table", f"'EFI PART' at offset {ss:#x}")
    mbr = boot[510:512] == b"\x55\xaa"
    if mbr and _mbr_entries(boot):
        return Detected("partitioned", "a disk with an MBR partition table", "0x55AA and partition entries")
    if source.read_at(0x8001, 5) == b"CD001":
        return Detected("iso9660", "an ISO 9660 CD/DVD image", "'CD001' at offset 0x8001")
    sb = source.read_at(0x400, 0x68)
    if len(sb) == 0x68 and sb[0x38:0x3A] == b"\x53\xef" and _le(sb, 0x18, 4) <= 6 and _le(sb, 0, 4):
        compat, incompat = _le(sb, 0x5C, 4), _le(sb, 0x60, 4)
        name = "ext4" if incompat & 0x2C0 else "ext3" if compat & 0x4 else "ext2"
        return Detected("ext", f"an {name} file system", "ext magic 0xEF53 at offset 0x438")
    if boot[:4] == b"XFSB":
        return Detected("xfs", "an XFS file system", "'XFSB' at offset 0")
    if source.read_at(0x10040, 8) == b"_BHRfS_M":
        return Detected("btrfs", "a btrfs file system", "'_BHRfS_M' at offset 0x10040")
    for n in range(4):
        if source.read_at(n * SECTOR, 8) == b"LABELONE":
            return Detected("lvm", "an LVM physical volume", f"'LABELONE' at offset {n * SECTOR:#x}")
    for page in (4096, 8192, 16384, 65536):
        if source.read_at(page - 10, 10) in (b"SWAPSPACE2", b"SWAP-SPACE"):
            return Detected("swap", "a Linux swap area", f"swap signature at offset {page - 10:#x}")
    if mbr:
        return Detected("partitioned", "a disk with an MBR boot sector", "0x55AA at offset 0x1fe")
    return None


def volume_extent(source: ByteSource) -> int | None:
    """How many bytes the disk or volume at offset 0 says it spans (an NTFS volume's sector count, the end of
    the last MBR partition, the GPT's backup header); None when it does not say."""
    boot = source.read_at(0, SECTOR)
    if boot[3:11] == b"NTFS    ":
        bps = _le(boot, 0x0B, 2)
        total = _le(boot, 0x28, 8)
        return bps * total if bps in (512, 1024, 2048, 4096) and total else None
    gpt = source.read_at(SECTOR, 92)
    if gpt[:8] == b"EFI PART":
        backup = _le(gpt, 0x20, 8)
        return (backup + 1) * SECTOR if backup else None
    if boot[510:512] == b"\x55\xaa":
        entries = _mbr_entries(boot)
        return max((start + count) * SECTOR for _t, start, count in entries) if entries else None
    return None


def _all_zero(source: ByteSource) -> bool:
    """The first and last MiB and 64 samples between are zero (a blank or wiped disk; bounded reads)."""
    size = source.size
    spots = [(0, MIB), (max(0, size - MIB), MIB)] + [(size * i // 65, 4096) for i in range(1, 65)]
    return all(not any(source.read_at(off, n)) for off, n in spots)


def not_an_image(found: Detected, size: int) -> str | None:
    """The named verdict for a file that is no disk image at all (empty, zeros, unknown bytes), or None."""
    if found.kind == "empty":
        return "empty file (0 bytes): not a disk image"
    if found.kind == "zeros":
        return (
            f"the image ({size:,} bytes) holds only zeros: a blank disk with no partition table, file system or "
            "image signature, not an image of an installed system"
        )
    if found.kind == "unknown":
        odd = f"; its size {size} is not a multiple of 512 bytes" if size % SECTOR else ""
        return (
            "not a disk image this linter recognises: no VHD footer ('conectix'), VHDX identifier ('vhdxfile'), "
            "partition table, NTFS boot sector, or QCOW2/VMDK/VDI/ISO 9660/Linux file-system signature at the "
            f"usual offsets{odd}"
        )
    return None


def detect(source: ByteSource) -> Detected:
    """What the whole image file is (the module docstring gives the order)."""
    if source.size == 0:
        return Detected("empty", "an empty file", "0 bytes")
    found = _header(source)
    if found is not None:
        return found
    footer = footer_offset(source)
    if footer is not None:
        size = "511-byte" if source.size - footer == SECTOR - 1 else "512-byte"
        return Detected("vhd", "a fixed VHD", f"'conectix' ({size} footer) at offset {footer:#x}")
    found = detect_volume(source)
    if found is not None:
        return found
    if _all_zero(source):
        return Detected("zeros", "a file of zeros", "all sampled bytes are zero")
    return Detected("unknown", "not a known disk image", "no known signature")
