"""Blob reads that follow the readers' access hints and a page blob's page list (issue 13, item 1, part 2).

- ``prefetch`` hints: the NTFS reader announces the ``$MFT``'s runs; the blob source fetches them exactly, in
  windows, merging close ones, so a fragmented ``$MFT`` costs its own bytes, not a 128 KiB block per run;
- Get Page Ranges: the empty parts of a page blob read as zeros without a request (against Azurite too).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.readers.errors import Unreadable
from harness.readers.image import blob
from harness.readers.image.blob import BlobRef, BlobSource, Properties, parse_blob_url
from harness.readers.image.container import open_disk
from harness.readers.image.ntfs import NtfsVolume
from harness.readers.image.source import FileSource, SliceSource, prefetch

MiB = 1024 * 1024
REF = BlobRef("https", "acct", "c", "d.vhd", "https://acct.blob.core.windows.net/c/d.vhd")


class Transport:
    """A blob in memory: records every ranged Get; a page list when ``pages`` is given."""

    def __init__(self, data: bytes, pages: list[tuple[int, int]] | None = None) -> None:
        self.data = data
        self.pages = pages
        self.calls: list[tuple[int, int]] = []

    def properties(self) -> Properties:
        return Properties(len(self.data), '"0x1"', "PageBlob" if self.pages is not None else "BlockBlob")

    def get(self, offset: int, length: int, etag: str) -> bytes:
        self.calls.append((offset, length))
        return self.data[offset : offset + length]

    def page_ranges(self, etag: str) -> list[tuple[int, int]] | None:
        return self.pages

    def close(self) -> None:
        pass


def scattered(rng: random.Random, size: int, count: int) -> list[tuple[int, int]]:
    """``count`` non-adjacent ranges of 4-72 KiB, spread over ``size`` bytes, in a random reading order."""
    starts = sorted(rng.sample(range(0, size // 4096 - 32), count))
    ranges = []
    last_end = -1
    for s in starts:
        off = s * 4096
        if off <= last_end + 4096:
            continue
        n = rng.randrange(1, 19) * 4096
        if ranges and off < ranges[-1][0] + ranges[-1][1] + 4096:
            continue
        ranges.append((off, min(n, size - off)))
        last_end = off + n
    rng.shuffle(ranges)
    return ranges


def test_hinted_ranges_are_fetched_exactly_in_windows() -> None:
    rng = random.Random(5)
    data = rng.randbytes(64 * MiB)
    ranges = scattered(rng, len(data), 600)
    wanted = sum(n for _, n in ranges)

    plain = Transport(data)
    source = BlobSource(REF, plain)
    for off, n in ranges:
        assert source.read_at(off, n) == data[off : off + n]
    unhinted = source.bytes_fetched

    hinted = Transport(data)
    source = BlobSource(REF, hinted)
    prefetch(source, ranges)
    assert hinted.calls == []  # a hint alone fetches nothing
    for off, n in ranges:
        assert source.read_at(off, n) == data[off : off + n]
        assert source.read_at(off + 100, 50) == data[off + 100 : off + 150]  # within a range: no new request
    # every range fetched once, plus the gaps of ranges merged into one request (at most HINT_GAP each)
    assert wanted <= source.bytes_fetched <= wanted + blob.HINT_GAP * len(hinted.calls)
    assert source.bytes_fetched < unhinted / 2, (source.bytes_fetched, unhinted)
    assert len(hinted.calls) <= len(ranges)
    # windows: the ranges are fetched a window at a time, not all at the first read
    assert source._h_bytes <= blob.HINT_WINDOW + 72 * 1024
    # a range read again after the pass is an ordinary (block) read, not a new window
    before = len(hinted.calls)
    off, n = ranges[0]
    assert source.read_at(off, n) == data[off : off + n]
    assert len(hinted.calls) - before <= 1 and sum(c[1] for c in hinted.calls[before:]) <= 2 * blob.BLOCK


def test_hints_longer_than_read_ahead_and_outside_the_blob_are_left_to_blocks() -> None:
    data = bytes(range(256)) * (16 * MiB // 256)
    transport = Transport(data)
    source = BlobSource(REF, transport)
    prefetch(source, [(0, 4 * MiB), (-5, 10), (len(data) + 1, 10), (5 * MiB, 0)])
    assert source._h_start == []
    prefetch(source, [(len(data) - 100, 4096)])  # clipped to the blob
    assert (source._h_start, source._h_end) == ([len(data) - 100], [len(data)])
    assert source.read_at(len(data) - 100, 4096) == data[-100:]
    assert transport.calls == [(len(data) - 100, 100)]


def test_hints_travel_through_slices_and_virtual_disks(tmp_path: Path) -> None:
    """SliceSource adds its start; a raw disk passes hints to its file; a FileSource ignores them."""
    seen: list[list[tuple[int, int]]] = []

    class Recording(FileSource):
        def prefetch(self, ranges: Any) -> None:
            seen.append(list(ranges))

    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4 * MiB))
    plain = FileSource(image)
    prefetch(plain, [(0, 10)])  # a no-op, no error
    plain.close()
    disk = open_disk(image)
    disk._file.close()
    disk._file = Recording(image)
    part = SliceSource(disk, MiB, 2 * MiB, "partition")
    prefetch(part, [(0, 4096), (2 * MiB - 10, 100), (5 * MiB, 10)])
    assert seen == [[(MiB, 4096), (3 * MiB - 10, 10)]]
    disk.close()


def test_page_blob_holes_read_as_zeros_without_requests() -> None:
    data = bytearray(8 * MiB)
    data[3 * MiB : 3 * MiB + 4096] = b"\x5a" * 4096
    data[7 * MiB + 512 : 7 * MiB + 1024] = b"\x33" * 512
    transport = Transport(bytes(data), pages=[(3 * MiB, 3 * MiB + 4096), (7 * MiB + 512, 7 * MiB + 1024)])
    source = BlobSource(REF, transport)
    assert source.read_at(0, 2 * MiB) == bytes(2 * MiB)
    assert transport.calls == [] and source.bytes_fetched == 0
    assert source.read_at(3 * MiB - 10, 4200) == bytes(data[3 * MiB - 10 : 3 * MiB + 4190])
    assert transport.calls == [(3 * MiB, blob.BLOCK)]  # only the block holding pages
    assert source.read_at(7 * MiB, 2048) == bytes(data[7 * MiB : 7 * MiB + 2048])
    # hinted ranges in holes are zeros too
    prefetch(source, [(5 * MiB, 8192), (7 * MiB + 700, 100)])
    calls = len(transport.calls)
    assert source.read_at(5 * MiB, 8192) == bytes(8192)
    assert source.read_at(7 * MiB + 700, 100) == bytes(data[7 * MiB + 700 : 7 * MiB + 800])
    assert len(transport.calls) == calls  # a hole needs no request; the other range's block is cached already
    assert source.requests == 1 + len(transport.calls) + 1  # properties, page list, gets


def test_a_page_list_answer_is_parsed_and_a_bad_one_ignored() -> None:
    xml = (
        b'<?xml version="1.0" encoding="utf-8"?><PageList><PageRange><Start>0</Start><End>511</End></PageRange>'
        b"<ClearRange><Start>512</Start><End>1023</End></ClearRange>"
        b"<PageRange><Start>4096</Start><End>8191</End></PageRange><NextMarker>m1</NextMarker></PageList>"
    )
    assert blob._page_list(xml) == ([(0, 512), (4096, 8192)], "m1")
    assert blob._page_list(b"<PageList/>") == ([], "")
    for bad in (
        b"not xml",
        b"<Other/>",
        b"<PageList><PageRange><Start>9</Start><End>3</End></PageRange></PageList>",
        b"<PageList><PageRange><Start>x</Start><End>3</End></PageRange></PageList>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><PageList>&a;</PageList>',
    ):
        assert blob._page_list(bad) is None, bad


# ---- a fragmented $MFT through the blob source -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.testing.ntfs_fragment import fragment_mft
    from tests.images.ntfs_build import build_volume, make_many_files, missing_tools

    if missing_tools():
        pytest.skip(f"NTFS tools missing: {missing_tools()}")
    work = tmp_path_factory.mktemp("blob-frag")
    tree = work / "tree"
    make_many_files(tree, 3000, per_dir=100, seed=11)
    volume = build_volume(tree, work / "frag.ntfs", 64 * MiB)
    shutil.rmtree(tree)
    fragment_mft(volume, seed=5, run_lengths=(2, 6))
    return volume


def inventory_of(source: Any) -> list[tuple[str, int]]:
    inv = NtfsVolume(source).inventory()
    return sorted((path, entry.size) for path, entry in inv.walk())


def test_a_fragmented_mft_costs_its_own_bytes(fragmented: Path) -> None:
    data = fragmented.read_bytes()
    local = FileSource(fragmented)
    expected = inventory_of(local)
    read_locally = local.bytes_read
    local.close()

    transport = Transport(data)
    source = BlobSource(REF, transport)
    assert inventory_of(source) == expected
    assert source.bytes_read == read_locally
    runs = len(NtfsVolume(FileSource(fragmented))._mft_runs)
    assert runs >= 150
    assert source.bytes_fetched <= 1.2 * read_locally, (source.bytes_fetched, read_locally)
    assert source.requests < runs  # close runs merged; no request per run

    # without the hint (a reader that does not announce its runs) the same pass costs blocks per run
    unhinted = BlobSource(REF, Transport(data))
    unhinted.prefetch = lambda ranges: None  # type: ignore[method-assign]
    assert inventory_of(unhinted) == expected
    assert unhinted.bytes_fetched > 1.5 * source.bytes_fetched


# ---- against Azurite --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from harness.fabric.azurite import Azurite, AzuriteError, find_azurite

    try:
        find_azurite()
    except AzuriteError as exc:
        pytest.skip(str(exc))
    server = Azurite()
    server.start(tmp_path_factory.mktemp("azurite"))
    try:
        server.blob_client().create_container("images")
        yield server
    finally:
        server.stop()


def container_sas() -> str:
    import datetime as dt

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from harness.fabric.azurite import ACCOUNT_KEY, ACCOUNT_NAME

    now = dt.datetime.now(dt.UTC)
    return generate_container_sas(
        ACCOUNT_NAME,
        "images",
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True),
        expiry=now + dt.timedelta(hours=1),
        start=now - dt.timedelta(hours=2),
    )


@pytest.mark.parametrize("scheme", ["https", "azure"])
def test_azurite_page_list_spares_the_requests_for_empty_pages(
    azurite: Any, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.fabric.azurite import ACCOUNT_KEY, ACCOUNT_NAME

    client = azurite.blob_client().get_blob_client("images", "sparse.vhd")
    if not client.exists():
        client.create_page_blob(16 * MiB)
        client.upload_page(b"\x11" * 8192, offset=4 * MiB, length=8192)
        client.upload_page(b"\x22" * 512, offset=16 * MiB - 512, length=512)
    if scheme == "https":
        ref = parse_blob_url(f"{azurite.blob_endpoint}/images/sparse.vhd")
        source = blob.open_blob(ref, container_sas())
    else:
        monkeypatch.setenv(blob.ENDPOINT_ENV, azurite.blob_endpoint.replace(ACCOUNT_NAME, "{account}"))
        source = blob.open_blob(parse_blob_url(f"azure://{ACCOUNT_NAME}/images/sparse.vhd"), "", ACCOUNT_KEY)
    try:
        assert source.blob_type == "PageBlob"
        assert source._pages == ([4 * MiB, 16 * MiB - 512], [4 * MiB + 8192, 16 * MiB])
        assert source.requests == 2  # Get Blob Properties, Get Page Ranges
        assert source.read_at(0, 4 * MiB) == bytes(4 * MiB)
        assert source.requests == 2 and source.bytes_fetched == 0
        assert source.read_at(4 * MiB - 1, 8194) == b"\0" + b"\x11" * 8192 + b"\0"
        assert source.read_at(16 * MiB - 600, 600) == bytes(88) + b"\x22" * 512
        assert source.requests == 4 and source.bytes_fetched == 2 * blob.BLOCK
    finally:
        source.close()


# ---- harness.lint.lint() takes blob URLs --------------------------------------------------------------------------


def test_the_python_api_lints_a_blob_url_like_the_file(
    azurite: Any, image_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.lint import LintOptions, lint
    from harness.testing.images import build_image, missing_tools
    from tests.images.test_blob_lint import BAD, sas_for, upload

    if missing_tools():
        pytest.skip(f"image tools missing: {missing_tools()}")
    path = build_image(BAD, "vhd-dynamic", cache_dir=image_cache)
    url = upload(azurite, path, f"api/{path.name}", "BlockBlob")
    sas = sas_for(f"api/{path.name}")
    signature = sas.split("sig=", 1)[1].split("&", 1)[0]
    monkeypatch.setenv("VMR_API_SAS", sas)
    missing = f"{azurite.blob_endpoint}/images/api/none.vhd"
    options = LintOptions(select=("VMR001", "VMR2", "VMR3", "VMR4"))
    local = lint([path], options)
    literal = container_sas()  # a literal token: discouraged on the command line, fine in Python
    remote = lint([url + "?{env:VMR_API_SAS}", missing + "?" + literal], options)

    def seen(result: Any) -> list[tuple[str, str, str]]:
        return sorted((f.rule_id, f.location, f.message) for f in result.artefacts[0].outcomes for f in f.findings)

    assert [a.artefact.identity for a in remote.artefacts] == [url, missing]
    assert remote.artefacts[0].artefact.display == path.name and remote.artefacts[0].unreadable is None
    assert seen(remote) == seen(local) and {"VMR211", "VMR310", "VMR403"} <= {f[0] for f in seen(local)}
    gone = remote.artefacts[1]
    assert remote.result_for(missing + "?anything") is gone and remote.result_for(url) is remote.artefacts[0]
    assert gone.unreadable is not None and "404" in gone.unreadable and missing in gone.unreadable
    assert [f.rule_id for o in gone.outcomes for f in o.findings] == ["VMR001"]
    for token in (signature, literal.split("sig=", 1)[1].split("&", 1)[0]):
        assert token not in repr(remote)
    with pytest.raises(ValueError, match="environment variable VMR_NOT_SET_HERE is not set"):
        lint([url + "?{env:VMR_NOT_SET_HERE}"])
    with pytest.raises(ValueError, match=r"expected \.\.\./CONTAINER/BLOB") as info:
        lint([f"{azurite.blob_endpoint}/images?sig=SECRET"])
    assert "SECRET" not in str(info.value)


# ---- differencing disks whose parents are blobs of the same container -------------------------------------------


def put(azurite: Any, path: Path, name: str) -> str:
    client = azurite.blob_client().get_blob_client("images", name)
    client.upload_blob(path.read_bytes(), blob_type="BlockBlob", overwrite=True)
    return f"{azurite.blob_endpoint}/images/{name}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """base.vhdx ← mid.avhdx ← top.avhdx (relative locators ``.\\mid.avhdx``), each child writing some sectors."""
    from harness.testing.vhdxwriter import write_base_vhdx, write_differencing_vhdx

    root = tmp_path_factory.mktemp("blob-chain")
    raw = root / "base.raw"
    raw.write_bytes(random.Random(1).randbytes(4 * MiB))
    base = write_base_vhdx(root / "base.vhdx", raw)
    mid = write_differencing_vhdx(base, root / "mid.avhdx", writes={0: b"\x01" * 4096, MiB: b"\x02" * 512})
    top = write_differencing_vhdx(mid, root / "top.avhdx", writes={512: b"\x03" * 1024})
    return [base, mid, top]


def test_a_differencing_chain_in_blob_storage_is_followed(azurite: Any, chain: list[Path]) -> None:
    urls = [put(azurite, p, f"chain/{p.name}") for p in chain]
    sas = container_sas()
    with open_disk(chain[2]) as local:
        expected = local.read_at(0, local.size)
    child = blob.register(parse_blob_url(urls[2]), sas)
    with open_disk(child) as disk:
        assert disk.info.disk_type == "differencing"
        assert disk.info.parent_chain == (urls[1], urls[0])
        assert disk.read_at(0, disk.size) == expected
    with pytest.raises(Unreadable, match="differencing chain longer than 1 parents"):
        open_disk(child, max_chain=1)


def test_a_missing_or_wrong_parent_blob_is_named_with_the_child_url(azurite: Any, chain: list[Path]) -> None:
    base, _mid, top = chain
    sas = container_sas()
    signature = sas.split("sig=", 1)[1].split("&", 1)[0]
    lonely = put(azurite, top, "lonely/top.avhdx")
    with pytest.raises(Unreadable) as info:
        open_disk(blob.register(parse_blob_url(lonely), sas))
    problem = info.value.problem
    assert problem.startswith(f"{lonely}: parent of differencing disk not found"), problem
    parent_url = f"{azurite.blob_endpoint}/images/lonely/mid.avhdx"
    assert f"{parent_url} (relative locator, absolute locator's file name next to the child)" in problem
    assert "404" in problem and signature not in problem and "?" not in problem
    # another VHDX under the parent's name: its DataWriteGuid is not the parent_linkage, so it is not the parent
    put(azurite, top, "impostor/top.avhdx")
    put(azurite, base, "impostor/mid.avhdx")
    with pytest.raises(Unreadable, match="not the parent: its DataWriteGuid"):
        open_disk(blob.register(parse_blob_url(f"{azurite.blob_endpoint}/images/impostor/top.avhdx"), sas))


def test_a_cycle_of_blobs_is_reported(azurite: Any, chain: list[Path], tmp_path: Path) -> None:
    from harness.testing.vhdxwriter import write_differencing_vhdx

    base = chain[0]
    a, b = tmp_path / "a.avhdx", tmp_path / "b.avhdx"
    write_differencing_vhdx(base, a)
    write_differencing_vhdx(a, b)
    write_differencing_vhdx(b, a)  # a → b → a
    url = put(azurite, a, "cycle/a.avhdx")
    put(azurite, b, "cycle/b.avhdx")
    with pytest.raises(Unreadable, match=r"cyclic differencing chain: a\.avhdx → b\.avhdx → a\.avhdx"):
        open_disk(blob.register(parse_blob_url(url), container_sas()))


def test_sibling_names_stay_in_the_container() -> None:
    child = blob.register(parse_blob_url("https://acct.blob.core.windows.net/vhds/dir/sub/c d.avhdx"), "sv=1&sig=S")
    placeholder, label = blob.sibling(child, "..\\p q.vhdx")  # type: ignore[misc]
    assert label == "https://acct.blob.core.windows.net/vhds/dir/p%20q.vhdx"
    assert blob._REGISTERED[os.path.realpath(placeholder)][1] == "sv=1&sig=S"  # the child's SAS
    assert blob.sibling(child, ".\\x.vhdx")[1] == "https://acct.blob.core.windows.net/vhds/dir/sub/x.vhdx"  # type: ignore[index]
    for bad in ("..\\..\\..\\x.vhdx", "C:\\x.vhdx", "\\\\srv\\share\\x.vhdx", "/etc/x.vhdx", "..\\..\\.."):
        assert isinstance(blob.sibling(child, bad), str), bad
    azure = blob.register(parse_blob_url("azure://acct/vhds/c.avhdx"), "", "KEY")
    assert blob.sibling(azure, "p.vhdx")[1] == "azure://acct/vhds/p.vhdx"  # type: ignore[index]
    path_style = blob.register(parse_blob_url("http://127.0.0.1:10000/devstoreaccount1/images/c.avhdx"))
    assert blob.sibling(path_style, "p.vhdx")[1] == "http://127.0.0.1:10000/devstoreaccount1/images/p.vhdx"  # type: ignore[index]


def test_an_error_in_a_parallel_window_is_reported_once_named() -> None:
    from harness.readers.image.blob import _Refused

    data = random.Random(9).randbytes(32 * MiB)
    ranges = [(i * MiB, 8192) for i in range(0, 32, 2)]

    class Failing(Transport):
        def get(self, offset: int, length: int, etag: str) -> bytes:
            if offset <= 6 * MiB < offset + length:
                raise _Refused("403 AuthorizationFailure: access denied")
            return super().get(offset, length, etag)

    source = BlobSource(REF, Failing(data), sleep=lambda s: None)
    prefetch(source, ranges)
    with pytest.raises(Unreadable) as info:
        source.read_at(0, 8192)
    assert info.value.problem.startswith(f"{REF.label}: Get Blob bytes {6 * MiB}-") and "403" in info.value.problem


def test_close_ranges_read_far_apart_come_in_one_request() -> None:
    data = random.Random(4).randbytes(64 * MiB)
    a, b = (10 * MiB, 32768), (10 * MiB + 32768 + 4096, 16384)  # 4 KiB apart, read first and last
    far = [(i * 4 * MiB, MiB) for i in range(1, 15) if i != 2 and i != 3]  # 12 MiB, more than a window
    ranges = [a, *far, b]
    transport = Transport(data)
    source = BlobSource(REF, transport, sleep=lambda s: None)
    prefetch(source, ranges)
    source.read_at(*a)
    assert (a[0], b[0] + b[1] - a[0]) in transport.calls  # a and b (and the 4 KiB between) in one request
    assert len(transport.calls) < 1 + len(far)  # a window: not everything at once
    for off, n in [*far, b]:
        assert source.read_at(off, n) == data[off : off + n]
    assert len(transport.calls) == 1 + len(far) and source.bytes_fetched == sum(n for _, n in ranges) + 4096
