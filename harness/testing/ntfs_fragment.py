"""Fragment the ``$MFT`` of a real NTFS volume the way a long-lived server's ends up (tests and benchmarks only).

``fragment_mft(path)`` takes a volume written by mkntfs + ntfs-3g (wimlib apply) and rewrites it in place:

* the ``$MFT``'s clusters after its first ``first_clusters`` move to scattered free clusters, in runs of
  ``run_lengths`` clusters, never two runs adjacent (so no run can merge with the next); the old clusters are
  zeroed and freed, so a reader that assumes a contiguous ``$MFT`` reads zeros;
* record 0 keeps the first extent (VCN 0 .. first_clusters-1) in its ``$DATA`` and gains an ``$ATTRIBUTE_LIST``
  (resident, or in a free cluster when record 0 cannot hold it); the later extents go to extension records, one
  non-resident ``$DATA`` each, as NTFS lays them out: header with base reference 0, lowest/highest VCN, sizes only in
  the first extent, mapping pairs starting from LCN 0 in every extent, attribute list entries sorted by type then
  lowest VCN, each naming the record (with its sequence number) and the attribute instance;
* the extension records are free records of ntfs-3g's reserved range 16..63, chosen so that each one lies in
  an extent described *before* it (record 16 in the first extent, the next one only reachable through the
  runs of record 16, and so on): a reader must resolve them with the runs known so far, as libfsntfs,
  ntfs-3g and the Linux driver do; record numbers grow with VCN (libfsntfs reads them in record order);
* ``$Bitmap`` (cluster allocation) and ``$MFT``'s ``$BITMAP`` (record allocation) are updated, and the new
  record 0 is copied to ``$MFTMirr`` so ntfs-3g's mirror check still passes.

Pure byte surgery with pread/pwrite: no mount, no library writing NTFS. Check the result with independent
readers (pyfsntfs, ntfsls/ntfscat); this module only asserts its own preconditions.
"""

from __future__ import annotations

import itertools
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path

_END = 0xFFFFFFFF
_DATA = 0x80
_ATTRIBUTE_LIST = 0x20
_MFT_BITMAP = 0xB0
_RESERVED = 64  # ntfs-3g keeps records 16..63 free for $MFT's own extension records (RESERVED_MFT_RECORDS)


@dataclass(frozen=True)
class Fragmented:
    runs: int  # runs of $MFT $DATA after the change (first extent included)
    extension_records: tuple[int, ...]  # record numbers holding the later extents, in VCN order
    extents: tuple[tuple[int, int, int], ...]  # (record, lowest VCN, runs) per extent, record 0's first
    mft_records: int
    nonresident_list: bool  # record 0's $ATTRIBUTE_LIST is in a cluster of its own


class _Vol:
    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.base = offset
        boot = self.read(0, 512)
        assert boot[3:11] == b"NTFS    ", "not an NTFS volume"
        bps = int.from_bytes(boot[0x0B:0x0D], "little")
        spc = boot[0x0D]
        self.cs = bps * (spc if spc <= 0x80 else 1 << (256 - spc))
        code = int.from_bytes(boot[0x40:0x41], "little", signed=True)
        self.rs = code * self.cs if code > 0 else 1 << -code
        self.clusters = int.from_bytes(boot[0x28:0x30], "little") // (self.cs // bps)
        self.mft_lcn = int.from_bytes(boot[0x30:0x38], "little")
        self.mirr_lcn = int.from_bytes(boot[0x38:0x40], "little")

    def read(self, off: int, n: int) -> bytes:
        data = os.pread(self.fd, n, self.base + off)
        assert len(data) == n, f"short read at {off:#x}"
        return data

    def write(self, off: int, data: bytes) -> None:
        assert os.pwrite(self.fd, data, self.base + off) == len(data)

    def unfix(self, rec: bytes) -> bytearray:
        out = bytearray(rec)
        assert out[:4] == b"FILE", "not a FILE record"
        usa = int.from_bytes(out[4:6], "little")
        for k in range(1, self.rs // 512 + 1):
            assert out[k * 512 - 2 : k * 512] == out[usa : usa + 2], "update sequence mismatch"
            out[k * 512 - 2 : k * 512] = out[usa + 2 * k : usa + 2 * k + 2]
        return out

    def refix(self, rec: bytearray) -> bytes:
        """Apply a new update sequence number to a record (fixed-up form in, on-disk form out)."""
        out = bytearray(rec)
        usa = int.from_bytes(out[4:6], "little")
        usn = int.from_bytes(out[usa : usa + 2], "little") % 0xFFFE + 1
        out[usa : usa + 2] = usn.to_bytes(2, "little")
        for k in range(1, self.rs // 512 + 1):
            out[usa + 2 * k : usa + 2 * k + 2] = out[k * 512 - 2 : k * 512]
            out[k * 512 - 2 : k * 512] = usn.to_bytes(2, "little")
        return bytes(out)


def attributes(rec: bytes | bytearray) -> list[tuple[int, int, int]]:
    """(type, offset, length) of each attribute of a fixed-up record."""
    out: list[tuple[int, int, int]] = []
    p = int.from_bytes(rec[0x14:0x16], "little")
    while True:
        atype, alen = struct.unpack_from("<II", rec, p)
        if atype == _END:
            return out
        assert alen >= 24 and p + alen <= len(rec), "corrupt attribute"
        out.append((atype, p, alen))
        p += alen


def decode_runs(mapping: bytes) -> list[tuple[int, int]]:
    """(lcn, length) of each run (no sparse runs expected here)."""
    runs: list[tuple[int, int]] = []
    p = lcn = 0
    while p < len(mapping) and mapping[p]:
        ls, os_ = mapping[p] & 15, mapping[p] >> 4
        length = int.from_bytes(mapping[p + 1 : p + 1 + ls], "little")
        assert os_, "sparse run in a metadata file"
        lcn += int.from_bytes(mapping[p + 1 + ls : p + 1 + ls + os_], "little", signed=True)
        runs.append((lcn, length))
        p += 1 + ls + os_
    return runs


def _signed_bytes(value: int) -> bytes:
    n = 1
    while not -(1 << (8 * n - 1)) <= value < 1 << (8 * n - 1):
        n += 1
    return value.to_bytes(n, "little", signed=True)


def encode_runs(runs: list[tuple[int, int]]) -> bytes:
    """Mapping pairs for (lcn, length) runs, the offsets relative to the previous run, starting from LCN 0."""
    out = bytearray()
    prev = 0
    for lcn, length in runs:
        ln = _signed_bytes(length)
        off = _signed_bytes(lcn - prev)
        out.append(len(off) << 4 | len(ln))
        out += ln + off
        prev = lcn
    out.append(0)
    return bytes(out)


def _nonresident_data(
    lowest: int, highest: int, mapping: bytes, sizes: tuple[int, int, int], ident: int, atype: int = _DATA
) -> bytes:
    """An unnamed non-resident attribute record, $DATA unless told (sizes: allocated, data, initialized)."""
    length = 0x40 + (len(mapping) + 7) // 8 * 8
    head = struct.pack("<IIBBHHH", atype, length, 1, 0, 0x40, 0, ident)
    head += struct.pack("<qqHH4xqqq", lowest, highest, 0x40, 0, *sizes)
    return (head + mapping).ljust(length, b"\0")


def _in_use(vol: _Vol, stream: bytearray, rec: int) -> bool:
    hdr = vol.unfix(bytes(stream[rec * vol.rs : (rec + 1) * vol.rs]))
    return bool(int.from_bytes(hdr[0x16:0x18], "little") & 1)


def _read_stream(vol: _Vol, runs: list[tuple[int, int]], size: int) -> bytearray:
    out = bytearray()
    for lcn, length in runs:
        out += vol.read(lcn * vol.cs, length * vol.cs)
    return out[:size]


def _write_stream(vol: _Vol, runs: list[tuple[int, int]], data: bytes) -> None:
    pos = 0
    for lcn, length in runs:
        chunk = data[pos : pos + length * vol.cs]
        if chunk:
            vol.write(lcn * vol.cs, chunk)
        pos += length * vol.cs


def fragment_mft(
    path: Path,
    *,
    offset: int = 0,
    first_clusters: int = 5,
    run_lengths: tuple[int, int] = (1, 3),
    chain: tuple[int, ...] = (16, 20, 40, 60),
    seed: int = 0,
    nonresident_list: bool = False,
) -> Fragmented:
    """Fragment the $MFT of the NTFS volume at ``offset`` in ``path`` (see the module docstring).

    ``chain``: the first extension records, each lying in the extent described by the one before (the first in
    record 0's extent), each holding just enough runs to reach the next; the rest of the runs fill the last of
    them and then the next free records below 64, as many as the runs need. The attribute list stays resident
    in record 0 when it fits there (and ``nonresident_list`` is false), else it gets a cluster of its own."""
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDWR)
    try:
        vol = _Vol(fd, offset)
        cs, rs = vol.cs, vol.rs
        rec0 = vol.unfix(vol.read(vol.mft_lcn * cs, rs))
        attrs = attributes(rec0)
        assert not any(t == _ATTRIBUTE_LIST for t, _, _ in attrs), "$MFT already has an attribute list"
        _t, dpos, dlen = next(a for a in attrs if a[0] == _DATA)
        low, high, roff, _cu, alloc, size, init = struct.unpack_from("<qqHH4xqqq", rec0, dpos + 16)
        old_runs = decode_runs(bytes(rec0[dpos + roff : dpos + dlen]))
        total = alloc // cs
        assert low == 0 and high == total - 1 and sum(n for _, n in old_runs) == total
        n_records = size // rs
        stream = bytearray(_read_stream(vol, old_runs, total * cs))
        vcn_to_lcn = [lcn + i for lcn, n in old_runs for i in range(n)]
        assert vcn_to_lcn[:first_clusters] == list(range(vol.mft_lcn, vol.mft_lcn + first_clusters)), (
            "the first extent must be contiguous in the original $MFT"
        )
        per_cluster = cs // rs
        assert per_cluster >= 1, "records larger than clusters are not supported here"

        # ---- the volume bitmap: free clusters to scatter the $MFT over
        rec6 = vol.unfix(vol.read(vol.mft_lcn * cs + 6 * rs, rs))
        _t, bpos, blen = next(a for a in attributes(rec6) if a[0] == _DATA)
        b_roff = struct.unpack_from("<H", rec6, bpos + 32)[0]
        b_size = struct.unpack_from("<q", rec6, bpos + 48)[0]
        bitmap_runs = decode_runs(bytes(rec6[bpos + b_roff : bpos + blen]))
        bitmap = _read_stream(vol, bitmap_runs, b_size)

        def used(c: int) -> bool:
            return bool(bitmap[c >> 3] >> (c & 7) & 1)

        def mark(c: int, on: bool) -> None:
            if on:
                bitmap[c >> 3] |= 1 << (c & 7)
            else:
                bitmap[c >> 3] &= ~(1 << (c & 7)) & 0xFF

        moving = vcn_to_lcn[first_clusters:]
        leaving = set(moving)
        free = [c for c in range(vol.clusters) if not used(c) and c not in leaving]
        lengths: list[int] = []
        left = len(moving)
        while left:
            n = min(left, rng.randint(*run_lengths))
            lengths.append(n)
            left -= n
        # pick slots: cut the free clusters into blocks of (run length + 1) consecutive free clusters, so a run
        # never touches the next one, then use them in random order
        blocks: list[int] = []
        i = 0
        need = max(run_lengths) + 1
        while i + need <= len(free):
            if free[i + need - 1] == free[i] + need - 1:
                blocks.append(free[i])
                i += need
            else:
                i += 1
        assert len(blocks) >= len(lengths), f"not enough free space to scatter {len(lengths)} runs"
        rng.shuffle(blocks)
        new_runs: list[tuple[int, int]] = [(vol.mft_lcn, first_clusters)]
        for n, start in zip(lengths, blocks, strict=False):
            new_runs.append((start, n))
        for (a, n), (b, _m) in itertools.pairwise(new_runs):
            assert b != a + n, "adjacent runs"

        # ---- split the later runs into extents held by extension records
        vcn_of_run: list[int] = []
        v = 0
        for _lcn, n in new_runs:
            vcn_of_run.append(v)
            v += n
        capacity = (rs - 0x38 - 8 - 0x40) // (1 + 1 + 4) - 1  # worst case: 1-byte length, 4-byte offset
        later = list(range(1, len(new_runs)))  # run indices after the first extent
        extents: list[tuple[int, list[int]]] = []  # (record, run indices)
        pos = 0
        for k, rec in enumerate(chain):
            if pos >= len(later):
                break
            known = vcn_of_run[later[pos]]
            assert (rec + 1) * rs <= known * cs, f"record {rec} is not in the part of the $MFT known before it"
            if k + 1 < len(chain):  # reach just past the next record of the chain
                target = (chain[k + 1] * rs) // cs + 1
                take = pos
                while take < len(later) and vcn_of_run[later[take]] < target:
                    take += 1
                take = max(take, pos + 1)
            else:
                take = pos + min(capacity, len(later) - pos)
            assert take - pos <= capacity
            extents.append((rec, later[pos:take]))
            pos = take
        spares = [r for r in range(chain[-1] + 1, _RESERVED) if r * rs < len(stream) and not _in_use(vol, stream, r)]
        rest = later[pos:]
        while rest:
            assert spares, f"{len(rest)} runs left and no free record below {_RESERVED} to hold them"
            extents.append((spares.pop(0), rest[:capacity]))
            rest = rest[capacity:]
        # the records must be free now (ntfs-3g's reserved range) and reachable through earlier extents
        for rec, idx in extents:
            assert not _in_use(vol, stream, rec), f"record {rec} is in use"
            assert (rec + 1) * rs <= vcn_of_run[idx[0]] * cs, f"record {rec} lies after the extent it holds"

        # ---- extension records
        rec0_seq = int.from_bytes(rec0[0x10:0x12], "little")
        ext_entries = []
        for rec, idx in extents:
            old = vol.unfix(bytes(stream[rec * rs : (rec + 1) * rs]))
            seq = int.from_bytes(old[0x10:0x12], "little") or 1
            first_vcn = vcn_of_run[idx[0]]
            last_vcn = vcn_of_run[idx[-1]] + new_runs[idx[-1]][1] - 1
            attr = _nonresident_data(first_vcn, last_vcn, encode_runs([new_runs[i] for i in idx]), (0, 0, 0), 0)
            body = bytearray(rs)
            usa_count = rs // 512 + 1
            struct.pack_into(
                "<4sHHQHHHHIIQHHI",
                body,
                0,
                b"FILE",
                0x30,
                usa_count,
                0,
                seq,
                0,
                0x38,
                1,
                0,
                rs,
                rec0_seq << 48,
                1,
                0,
                rec,
            )
            body[0x30:0x32] = old[0x30:0x32]  # keep the update sequence number (refix increments it)
            p = 0x38
            body[p : p + len(attr)] = attr
            p += len(attr)
            body[p : p + 4] = _END.to_bytes(4, "little")
            used_bytes = p + 8
            assert used_bytes <= rs, f"record {rec}: {len(idx)} runs do not fit"
            struct.pack_into("<I", body, 0x18, used_bytes)
            stream[rec * rs : (rec + 1) * rs] = vol.refix(body)
            ext_entries.append((first_vcn, rec, seq))

        # ---- record 0: first extent + attribute list
        next_id = int.from_bytes(rec0[0x28:0x2A], "little")
        ident = {t: int.from_bytes(rec0[p + 14 : p + 16], "little") for t, p, _ in attrs}

        def entry(atype: int, lowest: int, rec: int, seq: int, inst: int) -> bytes:
            return struct.pack("<IHBBqQH6x", atype, 0x20, 0, 0x1A, lowest, seq << 48 | rec, inst)

        al = b""
        for t, _p, _l in attrs:
            al += entry(t, 0, 0, rec0_seq, ident[t])
            if t == _DATA:
                al += b"".join(entry(_DATA, vcn, rec, seq, 0) for vcn, rec, seq in ext_entries)
        al_len = 0x18 + (len(al) + 7) // 8 * 8
        al_attr = struct.pack("<IIBBHHHIHBx", _ATTRIBUTE_LIST, al_len, 0, 0, 0x18, 0, next_id, len(al), 0x18, 0)
        al_attr = (al_attr + al).ljust(al_len, b"\0")
        al_runs: list[tuple[int, int]] = []
        if (
            nonresident_list or sum(n for _t, _p, n in attrs) + 0x100 + al_len > rs
        ):  # too big to stay resident: in clusters of its own
            n_al = -(-len(al) // cs)
            assert n_al <= need and len(blocks) > len(lengths), "no room for a non-resident attribute list"
            al_runs = [(blocks[len(lengths)], n_al)]
            al_attr = _nonresident_data(
                0, n_al - 1, encode_runs(al_runs), (n_al * cs, len(al), len(al)), next_id, _ATTRIBUTE_LIST
            )
        first_attr = _nonresident_data(
            0, first_clusters - 1, encode_runs(new_runs[:1]), (alloc, size, init), ident[_DATA]
        )
        body = bytearray(rec0[: int.from_bytes(rec0[0x14:0x16], "little")])
        for t, p, n in attrs:
            if t > _ATTRIBUTE_LIST and al_attr:
                body += al_attr
                al_attr = b""
            body += first_attr if t == _DATA else rec0[p : p + n]
        body += _END.to_bytes(4, "little") + bytes(4)
        assert len(body) <= rs, "record 0 overflows"
        used_bytes = len(body)
        body = body.ljust(rs, b"\0")
        struct.pack_into("<I", body, 0x18, used_bytes)
        struct.pack_into("<H", body, 0x28, next_id + 1)
        new0 = vol.refix(body)
        stream[0:rs] = new0

        # ---- $MFT's record bitmap: the extension records are in use
        _t, mpos, mlen = next(a for a in attrs if a[0] == _MFT_BITMAP)
        assert rec0[mpos + 8], "a resident $MFT $BITMAP is not supported here"
        m_roff = struct.unpack_from("<H", rec0, mpos + 32)[0]
        m_size = struct.unpack_from("<q", rec0, mpos + 48)[0]
        m_runs = decode_runs(bytes(rec0[mpos + m_roff : mpos + mlen]))
        mbits = _read_stream(vol, m_runs, m_size)
        for rec, _idx in extents:
            mbits[rec >> 3] |= 1 << (rec & 7)
        _write_stream(vol, m_runs, bytes(mbits))

        # ---- write: zero and free the old clusters, write the stream to the new ones, mirror record 0
        for c in moving:
            mark(c, False)
            vol.write(c * cs, bytes(cs))
        _write_stream(vol, al_runs, al.ljust(sum(n for _l, n in al_runs) * cs, b"\0"))
        for lcn, n in new_runs[1:] + al_runs:
            for c in range(lcn, lcn + n):
                assert not used(c)
                mark(c, True)
        _write_stream(vol, new_runs, bytes(stream))
        _write_stream(vol, bitmap_runs, bytes(bitmap))
        vol.write(vol.mirr_lcn * cs, new0)
        return Fragmented(
            runs=len(new_runs),
            extension_records=tuple(rec for rec, _ in extents),
            extents=((0, 0, 1), *((rec, vcn_of_run[idx[0]], len(idx)) for rec, idx in extents)),
            mft_records=n_records,
            nonresident_list=bool(al_runs),
        )
    finally:
        os.close(fd)
