"""Image lint end to end: same findings in every container format and partition style; corrupted inputs each
give one clear finding within a bounded time and leave the image file untouched; parser crashes and hangs
in the worker become findings; the image and service-model suites together catch a firewall mismatch."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.engine.artefact import IMAGE, Artefact
from harness.engine.catalogue import all_rules
from harness.engine.evaluate import evaluate
from harness.extraction import readahead, worker
from harness.extraction.extract import extract
from harness.facts.image import VMROLE, ImageSubject
from harness.readers.errors import Unreadable
from harness.testing import keymaterial as km
from harness.testing.hivewriter import build_hive, dword, sz
from harness.testing.images import build_image, missing_tools, volume_extent
from harness.testing.vhdwriter import corrupt_copy, write_differencing_vhd
from harness.testing.windows import FIREWALL_POLICY, WINLOGON, windows_server_2008r2_vmrole
from tests.images.ntfs_build import RawVolume

pytestmark = [
    pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()} (run ./dev setup)"),
    pytest.mark.xdist_group("image-lint"),
]

SAMPLE = Path(__file__).resolve().parents[2] / "harness" / "samples" / "vmrole"
FW = f"ControlSet001\\{FIREWALL_POLICY}"
BAD = windows_server_2008r2_vmrole().with_changes(
    files={"inetpub/wwwroot/site.pfx": km.pfx_bytes(), "Users/Administrator/.ssh/id_rsa": km.pem_private_key_bytes()},
    hives={
        "SOFTWARE": {WINLOGON: {"DefaultPassword": sz("Hunter2!x")}},
        "SYSTEM": {f"{FW}\\PublicProfile": {"EnableFirewall": dword(0)}, "Setup": {"SetupType": dword(0)}},
    },
)
#: Format rules (01x) judge the container itself, so they differ between formats by design.
CONTENT_RULES = sorted(
    r.id for r in all_rules() if IMAGE in r.applies_to and r.id not in ("VMR001",) and not r.id.startswith("VMR01")
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _findings(path: Path) -> set[tuple[str, str, str]]:
    facts = extract(path)
    subject = ImageSubject(Artefact.from_path(path, IMAGE), facts, VMROLE, "test")
    out: set[tuple[str, str, str]] = set()
    for rule_id in CONTENT_RULES:
        rule = next(r for r in all_rules() if r.id == rule_id)
        for f in evaluate(rule, subject).findings:
            out.add((f.rule_id, f.location, f.message))
    return out


def test_same_findings_in_every_format_and_partition_style(image_cache: Path, tmp_path: Path) -> None:
    reference: set[tuple[str, str, str]] | None = None
    seen = []
    for style in ("mbr", "gpt", "none"):
        spec = BAD.with_changes(partition_style=style)
        for fmt in ("raw", "vhd-fixed", "vhd-dynamic", "vhdx", "vhd-differencing"):
            if fmt == "vhd-differencing":
                parent = tmp_path / f"{style}-parent.vhd"
                shutil.copyfile(build_image(spec, "vhd-dynamic", cache_dir=image_cache), parent)
                path = write_differencing_vhd(parent, tmp_path / f"{style}-child.vhd")
            else:
                path = build_image(spec, fmt, cache_dir=image_cache)
            found = _findings(path)
            seen.append((style, fmt))
            if reference is None:
                reference = found
            assert found == reference, (style, fmt, found ^ reference)
    assert reference is not None
    assert {r for r, _, _ in reference} >= {"VMR310", "VMR211", "VMR403", "VMR205"}
    assert len(seen) == 15


def test_differencing_child_overrides_its_parent(image_cache: Path, tmp_path: Path) -> None:
    """Writes in the child win over the parent: a key file planted only in the child is found."""
    good = windows_server_2008r2_vmrole()
    bad = good.with_changes(files={"inetpub/wwwroot/site.pfx": km.pfx_bytes()})
    good_path, bad_raw = (
        build_image(good, "vhd-dynamic", cache_dir=image_cache),
        build_image(bad, "raw", cache_dir=image_cache),
    )
    parent = tmp_path / "parent.vhd"
    shutil.copyfile(good_path, parent)
    good_raw = build_image(good, "raw", cache_dir=image_cache).read_bytes()
    data = bad_raw.read_bytes()
    assert len(data) == len(good_raw)
    writes = {}
    for off in range(0, len(data), 4096):  # every 4 KiB page where the two disks differ goes into the child
        if data[off : off + 4096] != good_raw[off : off + 4096]:
            writes[off] = data[off : off + 4096]
    child = write_differencing_vhd(parent, tmp_path / "child.vhd", writes=writes)
    labels = {m.label for m in extract(child).key_material}
    assert labels == {"pkcs12"}
    assert not extract(parent).key_material


# ---- corrupted inputs: one clear finding each, bounded time, file unchanged ----------------------------------


def _truncated(image_cache: Path, tmp: Path) -> Path:
    src = build_image(windows_server_2008r2_vmrole(), "vhd-fixed", cache_dir=image_cache)
    return corrupt_copy(src, tmp / "truncated.vhd", truncate=src.stat().st_size - 512 - 4096)


def _bad_footer(image_cache: Path, tmp: Path) -> Path:
    src = build_image(windows_server_2008r2_vmrole(), "vhd-fixed", cache_dir=image_cache)
    data = src.read_bytes()[-512:]
    return corrupt_copy(src, tmp / "bad-footer.vhd", patch={-512 + 64: bytes([data[64] ^ 0x5A])})


def _bat_past_end(image_cache: Path, tmp: Path) -> Path:
    src = build_image(windows_server_2008r2_vmrole(), "vhd-dynamic", cache_dir=image_cache)
    data = src.read_bytes()
    table_offset = int.from_bytes(data[512 + 16 : 512 + 24], "big")
    return corrupt_copy(src, tmp / "bat.vhd", patch={table_offset: (0x7FFFFFF0).to_bytes(4, "big")})


def _cyclic_chain(image_cache: Path, tmp: Path) -> Path:
    base = tmp / "a.vhd"
    shutil.copyfile(build_image(windows_server_2008r2_vmrole(), "vhd-dynamic", cache_dir=image_cache), base)
    b = write_differencing_vhd(base, tmp / "b.vhd")
    a2 = tmp / "a2.vhd"
    write_differencing_vhd(b, a2)
    os.replace(a2, base)  # a.vhd now names b.vhd as its parent, which names a.vhd
    return b


def _hive_bin(image_cache: Path, tmp: Path) -> Path:
    spec = windows_server_2008r2_vmrole()
    hive = bytearray(build_hive(spec.hive("SYSTEM")))  # type: ignore[arg-type]
    second_bin = 4096 + int.from_bytes(hive[4096 + 8 : 4096 + 12], "little")
    hive[second_bin + 32 : second_bin + 36] = b"\0\0\0\0"  # first cell of the second bin: size 0
    bad = spec.with_changes(files={"Windows/System32/config/SYSTEM": bytes(hive)})
    src = build_image(bad, "vhd-fixed", cache_dir=image_cache)
    return Path(shutil.copyfile(src, tmp / "hive.vhd"))


def _mft_loop(image_cache: Path, tmp: Path) -> Path:
    spec = windows_server_2008r2_vmrole().with_changes(files={"LoopA/LoopB/inner.txt": "x"})
    raw = build_image(spec, "raw", cache_dir=image_cache)
    offset, size = volume_extent(spec)
    image = bytearray(raw.read_bytes())
    volume = image[offset : offset + size]
    from harness.readers.image.ntfs import NtfsVolume
    from tests.images.ntfs_build import BytesSource

    inventory = NtfsVolume(BytesSource(volume)).inventory()
    a, b = inventory.lookup("LoopA"), inventory.lookup("LoopA/LoopB")
    assert a is not None and b is not None
    patcher = RawVolume(volume)
    fn = patcher.attribute(a.record, 0x30)
    value = fn + int.from_bytes(patcher.fixed_record(a.record)[fn + 20 : fn + 22], "little")
    seq_b = int.from_bytes(patcher.fixed_record(b.record)[16:18], "little")
    patcher.patch(a.record, value, (seq_b << 48 | b.record).to_bytes(8, "little"))
    image[offset : offset + size] = volume
    patched = tmp / "loop.img"
    patched.write_bytes(bytes(image))
    out = tmp / "loop.vhd"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", patched, out],
        check=True,
    )
    return out


CORRUPTIONS = {
    "truncated": (_truncated, "VMR001", "footer"),
    "bad-footer-checksum": (_bad_footer, "VMR010", "checksum"),
    "bat-past-end": (_bat_past_end, "VMR001", "BAT"),
    "cyclic-chain": (_cyclic_chain, "VMR001", "cyclic"),
    "hive-bin": (_hive_bin, "VMR002", "SYSTEM"),
    "mft-loop": (_mft_loop, "VMR002", "loop"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_input_gives_one_clear_finding(
    case: str, image_cache: Path, tmp_path: Path, pytester: pytest.Pytester
) -> None:
    make, rule_id, words = CORRUPTIONS[case]
    image = make(image_cache, tmp_path)
    related = sorted(tmp_path.glob("*.vhd"))
    before = {p: sha256(p) for p in {image, *related}}
    started = time.monotonic()
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--vmr-image", str(image), "--vmr-fail-on", "high", "-rf", "--vmr-image-timeout", "60"
    )
    elapsed = time.monotonic() - started
    assert elapsed < 60, elapsed
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert len(failed) == 1, result.outlines[-40:]
    assert rule_id in failed[0], failed
    assert words.lower() in "\n".join(result.outlines).lower()
    assert "Traceback" not in "\n".join(result.outlines)
    assert {p: sha256(p) for p in before} == before


# ---- worker isolation ------------------------------------------------------------------------------------


def test_extraction_runs_in_a_worker_and_returns_facts(image_cache: Path) -> None:
    path = build_image(windows_server_2008r2_vmrole(), "vhd-fixed", cache_dir=image_cache)
    facts = worker.read_image_isolated(path, timeout=60)
    assert facts.os is not None and facts.os.product_name == "Windows Server 2008 R2 Enterprise"


def _crash(path: Path, options: object, progress) -> None:  # type: ignore[no-untyped-def]
    progress("reading the SYSTEM hive (\\Windows\\System32\\config\\SYSTEM)")
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(path: Path, options: object, progress) -> None:  # type: ignore[no-untyped-def]
    progress("reading the NTFS volume in partition 1")
    time.sleep(60)


def _bug(path: Path, options: object, progress) -> None:  # type: ignore[no-untyped-def]
    progress("reading services")
    raise KeyError("boom")


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_a_parser_crash_becomes_unreadable_naming_the_stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(worker, "extract", _crash)
    with pytest.raises(Unreadable, match=r"crashed \(SIGSEGV\) while reading the SYSTEM hive"):
        worker.read_image_isolated(image, timeout=30)
    monkeypatch.setattr(worker, "extract", _hang)
    started = time.monotonic()
    with pytest.raises(Unreadable, match=r"did not finish within 1 s \(stopped while reading the NTFS volume"):
        worker.read_image_isolated(image, timeout=1)
    assert time.monotonic() - started < 10
    monkeypatch.setattr(worker, "extract", _bug)
    with pytest.raises(Unreadable, match=r"failed while reading services: KeyError"):
        worker.read_image_isolated(image, timeout=30)


def test_not_an_image_is_one_clear_finding(tmp_path: Path, pytester: pytest.Pytester) -> None:
    fake = tmp_path / "disk.vhd"
    fake.write_bytes(b"hello" * 1000)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--vmr-image", str(fake), "-rf")
    assert [line for line in result.outlines if line.startswith("FAILED")] == [
        line for line in result.outlines if line.startswith("FAILED") and "VMR001" in line
    ]
    assert "conectix" in "\n".join(result.outlines)


# ---- cross-check: image suite + service-model suite ---------------------------------------------------------


def test_image_and_service_model_together_catch_a_firewall_mismatch(
    image_cache: Path, tmp_path: Path, pytester: pytest.Pytester
) -> None:
    """The model declares port 9443; the image opens 8443. Only the two suites together can see it."""
    csdef = tmp_path / "ServiceDefinition.csdef"
    csdef.write_text(
        (SAMPLE / "ServiceDefinition.csdef").read_text("utf-8").replace('localPort="8443"', 'localPort="9443"'), "utf-8"
    )
    image = build_image(windows_server_2008r2_vmrole(), "vhd-fixed", cache_dir=image_cache)
    alone = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--vmr-image", str(image), "-rfs")
    assert alone.ret == 0, alone.outlines[-20:]
    together = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--vmr-image", str(image), "--vmr-csdef", str(csdef), "-rf"
    )
    assert together.ret == 1
    failed = [line for line in together.outlines if line.startswith("FAILED")]
    assert len(failed) == 1 and "VMR401" in failed[0], failed
    assert "9443" in "\n".join(together.outlines)


def test_prefetched_reading_is_taken_by_the_plugin_read(
    image_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.extraction.extract import ExtractOptions

    path = build_image(windows_server_2008r2_vmrole(), "vhd-fixed", cache_dir=image_cache)
    log = tmp_path / "reads.log"
    monkeypatch.setenv("VMR_IMAGE_READ_LOG", str(log))
    monkeypatch.setenv("VMROLE_IMAGE_READERS", "2")
    worker.prefetch(path)
    worker.prefetch(path, ExtractOptions(signature_files=("/nonexistent.yml",)))  # never collected
    assert len(worker._PENDING) == 2
    facts = worker.read_image_isolated(path, timeout=60)
    assert facts.os is not None and len(worker._PENDING) == 1
    assert len(log.read_text().splitlines()) == 2  # taken from the read-ahead, not read again
    pid = readahead._PROCESSES[-1].pid
    worker._stop_pending()  # what atexit does: the uncollected read is stopped, and the read-ahead process ends
    assert not worker._PENDING and not readahead._PROCESSES
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
