"""Build small NTFS volumes for the NTFS reader tests and benchmark, with real tools and no mounts.

directory tree → ``wimlib-imagex capture`` → ``mkntfs`` on a sparse file → ``wimlib-imagex apply`` (writes the
unmounted volume directly). ntfs-3g's offline tools then add what a Linux tree cannot carry: an alternate data
stream (``ntfscp -N``), a sparse tail (``ntfstruncate``), a volume label (``ntfslabel``).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

TOOLS = ("wimlib-imagex", "mkntfs", "ntfscp", "ntfstruncate", "ntfsinfo")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None and not Path("/sbin", tool).exists()]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin"):
        candidate = Path(folder, name)
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(name)


def _run(*args: str | Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout[-4000:]}")
    return done.stdout


def build_volume(
    tree: Path, volume: Path, size: int, *, cluster: int = 4096, sector: int = 512, label: str | None = None
) -> Path:
    """A raw NTFS volume file of ``size`` bytes holding ``tree``'s contents at its root."""
    wim = volume.with_name(volume.name + ".wim")
    _run(_tool("wimlib-imagex"), "capture", tree, wim, "Windows", "--compress=none", "--no-acls")
    volume.unlink(missing_ok=True)
    with volume.open("wb") as fh:
        fh.truncate(size)
    mkntfs = [_tool("mkntfs"), "-F", "-Q", "-q", "-s", str(sector), "-c", str(cluster)]
    if label:
        mkntfs += ["-L", label]
    _run(*mkntfs, volume)
    _run(_tool("wimlib-imagex"), "apply", wim, "1", volume)
    wim.unlink()
    return volume


def add_stream(volume: Path, path: str, stream: str, data: bytes, scratch: Path) -> None:
    """Write a named data stream (ADS) ``path:stream`` into an unmounted volume."""
    src = scratch / f"stream-{stream}.bin"
    src.write_bytes(data)
    _run(_tool("ntfscp"), "-q", "-N", stream, volume, src, path)
    src.unlink()


def inode_of(volume: Path, path: str) -> int:
    out = _run(_tool("ntfsinfo"), "-F", path, volume)
    for line in out.splitlines():
        if line.startswith("Dumping Inode"):
            return int(line.split()[2])
    raise RuntimeError(f"no inode for {path}: {out[:500]}")


def extend_sparse(volume: Path, path: str, new_size: int) -> int:
    """Grow a file's unnamed $DATA to ``new_size``: ntfs-3g adds a sparse run (a hole) at the end."""
    inode = inode_of(volume, path)
    _run(_tool("ntfstruncate"), "-q", volume, str(inode), "0x80", str(new_size))
    return inode


# ---- trees ------------------------------------------------------------------------------------------------

LONG_SEGMENT = "Long-Directory-Name-" + "x" * 60


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def make_sample_tree(root: Path) -> dict[str, bytes]:
    """The feature tree of the tests. Returns {relative posix path: content} for every regular file."""
    files: dict[str, bytes] = {
        "Windows/System32/config/SYSTEM": b"regf" + payload(1, 20_000),
        "Windows/System32/config/SOFTWARE": b"regf" + payload(2, 9_000),
        "Windows/System32/drivers/etc/hosts": b"127.0.0.1 localhost\r\n",
        "Windows/System32/CMD.EXE": b"MZ" + payload(3, 5000),
        "Windows/Temp/Mixed-Case.TxT": b"mixed case name",
        "Users/Ünïcödé ✓ 文件/naïve.txt": "unicode ✓".encode(),
        "Users/Ünïcödé ✓ 文件/😀 emoji.bin": payload(4, 1500),
        "empty.txt": b"",
        "tiny.txt": b"tiny\n",
        "resident-700.bin": payload(5, 700),
        "big.bin": payload(6, 3 * 1024 * 1024 + 123),
        "zeros.bin": bytes(2 * 1024 * 1024),
        "grow.bin": payload(7, 10_000),
        "ads-host.txt": b"host of a stream",
    }
    deep = "/".join(f"d{i:03d}" for i in range(40))
    files[f"Deep/{deep}/bottom.txt"] = b"bottom"
    long_dir = "/".join([LONG_SEGMENT] * 4)
    files[f"LongPaths/{long_dir}/file-with-a-long-name-{'y' * 40}.txt"] = b"long path"
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "EmptyDir").mkdir()
    (root / "Windows" / "Temp" / "Nested" / "Empty").mkdir(parents=True)
    os.link(root / "big.bin", root / "Windows" / "Temp" / "hardlink-to-big.bin")
    files["Windows/Temp/hardlink-to-big.bin"] = files["big.bin"]
    for i in range(300):  # enough entries for non-resident directory indexes ($INDEX_ALLOCATION)
        data = payload(100 + i, i * 7)
        rel = f"Many/f{i:04d}-{'A' if i % 2 else 'b'}.dat"
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = data
    return files


def make_many_files(root: Path, count: int, *, per_dir: int = 200, seed: int = 0) -> None:
    """``count`` files in folders of ``per_dir``, two levels deep, with a mix of resident and
    non-resident sizes (like a Windows image: most files a few KiB, many tiny)."""
    rng = random.Random(seed)
    blob = rng.randbytes(16384)
    made = 0
    d = 0
    while made < count:
        folder = root / f"Dir{d // 50:03d}" / f"Sub{d % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_dir, count - made)):
            size = rng.choice((0, 40, 200, 450, 700, 2048, 4000, 9000, 15000))
            fd = os.open(folder / f"File_{i:04d}_{rng.randrange(1 << 30):x}.dll", os.O_WRONLY | os.O_CREAT, 0o644)
            if size:
                os.write(fd, blob[:size])
            os.close(fd)
            made += 1
        d += 1


# ---- raw access for corruption tests (independent of the reader under test) -------------------------------


class BytesSource:
    """A ByteSource over bytes in memory (a patched copy of a volume)."""

    def __init__(self, data: bytes | bytearray, label: str = "memory.ntfs") -> None:
        self.data = bytes(data)
        self.size = len(self.data)
        self.label = label

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative read")
        return self.data[offset : offset + length]


class RawVolume:
    """Just enough NTFS to find a record's bytes in the first $MFT run and patch them (tests only)."""

    def __init__(self, image: bytearray) -> None:
        self.image = image
        bps = int.from_bytes(image[0x0B:0x0D], "little")
        spc = image[0x0D]
        self.cluster = bps * (spc if spc <= 0x80 else 1 << (256 - spc))
        code = int.from_bytes(image[0x40:0x41], "little", signed=True)
        self.record_size = code * self.cluster if code > 0 else 1 << -code
        self.mft = int.from_bytes(image[0x30:0x38], "little") * self.cluster

    def record_offset(self, number: int) -> int:
        off = self.mft + number * self.record_size
        assert self.image[off : off + 4] == b"FILE", f"record {number} is not in the first $MFT run"
        return off

    def fixed_record(self, number: int) -> bytes:
        off = self.record_offset(number)
        rec = bytearray(self.image[off : off + self.record_size])
        usa = int.from_bytes(rec[4:6], "little")
        for k in range(1, self.record_size // 512 + 1):
            rec[k * 512 - 2 : k * 512] = rec[usa + 2 * k : usa + 2 * k + 2]
        return bytes(rec)

    def attributes(self, number: int) -> list[tuple[int, int, int]]:
        """(type, offset in the record, length) of every attribute."""
        rec = self.fixed_record(number)
        p = int.from_bytes(rec[0x14:0x16], "little")
        out: list[tuple[int, int, int]] = []
        while True:
            atype = int.from_bytes(rec[p : p + 4], "little")
            if atype == 0xFFFFFFFF:
                return out
            alen = int.from_bytes(rec[p + 4 : p + 8], "little")
            out.append((atype, p, alen))
            p += alen

    def attribute(self, number: int, atype: int, nth: int = 0) -> int:
        return [off for t, off, _ in self.attributes(number) if t == atype][nth]

    def patch(self, number: int, offset: int, data: bytes) -> None:
        """Overwrite bytes of a record, never the update sequence's sector ends (so no fixup to redo)."""
        for k in range(len(data)):
            assert (offset + k) % 512 < 510, f"patch at {offset + k} touches a sector end"
        off = self.record_offset(number) + offset
        self.image[off : off + len(data)] = data
