"""The fuzz targets in the test suite: every kept corpus and regression input through the contract, and a fixed
number of mutated inputs per target (a small deterministic mutator, no atheris process), so a parser change
that breaks the contract fails here before any long fuzzing run."""

from __future__ import annotations

import contextlib
import random
import struct
from pathlib import Path

import pytest

from tests.fuzz.targets import (
    DATA_DIR,
    TARGETS,
    Contract,
    MemorySource,
    SandboxViolation,
    corpus_dir,
    inputs,
    regressions_dir,
    sandbox,
    sandboxed,
    sparse_decode,
    sparse_encode,
    write_input,
)

MUTATED_PER_TARGET = 250
#: Generous on a loaded 2-core CI machine; the fuzzing runs use 1 s.
SMOKE_HANG_SECONDS = 5.0
_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def mutate(rng: random.Random, data: bytes, pool: list[bytes], max_len: int) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip bits
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2 and buf:  # delete a range
            del buf[pos : pos + rng.randint(1, 64)]
        elif op == 3 and buf:  # duplicate a range
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 64)]
        elif op == 4 and len(buf) >= 4:  # an interesting integer
            i = rng.randrange(len(buf) - 3)
            buf[i : i + 4] = struct.pack(rng.choice(("<I", ">I")), rng.choice(_INTERESTING))
        elif op == 5 and pool:  # splice with another input
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + other[cut:]
        elif op == 6 and buf:  # truncate
            del buf[pos:]
    return bytes(buf[:max_len])


def _replay(name: str, files: list[Path]) -> None:
    contract = Contract(TARGETS[name], determinism_every=1, hang_seconds=SMOKE_HANG_SECONDS, track_memory=True)
    failures = []
    for path in files:
        try:
            contract(path.read_bytes())
        except Exception as exc:
            failures.append(f"{path.relative_to(corpus_dir(name).parent.parent)}: {type(exc).__name__}: {exc}"[:400])
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", list(TARGETS))
def test_kept_corpus_keeps_the_contract(name: str) -> None:
    _replay(name, inputs(corpus_dir(name)))


REGRESSIONS = sorted(p.parent.name for p in Path(regressions_dir("x")).parent.glob("*/*") if p.is_file())


@pytest.mark.parametrize("name", sorted(set(REGRESSIONS)) or [pytest.param("none", marks=pytest.mark.skip)])
def test_regression_inputs_keep_the_contract(name: str) -> None:
    """Every crash fuzzing found, with its minimal input (tests/fuzz/regressions/<target>/<name>), now fixed."""
    _replay(name, inputs(regressions_dir(name)))


@pytest.mark.parametrize("name", list(TARGETS))
def test_mutated_inputs_keep_the_contract(name: str) -> None:
    target = TARGETS[name]
    pool = [p.read_bytes() for p in inputs(corpus_dir(name))] or [b""]
    rng = random.Random(f"vmrole-fuzz-{name}")
    contract = Contract(target, determinism_every=16, hang_seconds=SMOKE_HANG_SECONDS)
    for n in range(MUTATED_PER_TARGET):
        data = mutate(rng, rng.choice(pool), pool, min(target.max_len, 256 * 1024))
        try:
            contract(data)
        except Exception as exc:
            raise AssertionError(
                f"{name}: mutated input #{n} ({len(data)} bytes, {data[:80]!r}...) broke the contract"
            ) from exc


def test_sandbox_refuses_a_parent_outside_it(tmp_path: Path) -> None:
    """A differencing VHD whose absolute locator names a real parent outside the sandbox: the container target
    refuses the open, so the reader reports the parent as not found (Unreadable), never reads it."""
    from harness.testing.vhdwriter import write_differencing_vhd

    decoded = sparse_decode((DATA_DIR / "parent.vhd.sprs").read_bytes())
    assert decoded is not None
    _name, size, chunks = decoded
    parent = tmp_path / "outside-parent.vhd"
    with parent.open("wb") as fh:
        fh.truncate(size)
        for off, chunk in chunks:
            fh.seek(off)
            fh.write(chunk)
    child = write_differencing_vhd(parent, tmp_path / "child.vhd", writes={0: b"\x01" * 512}, locator="absolute")
    contract = Contract(TARGETS["container"], determinism_every=1)
    contract(child.read_bytes())
    assert contract.stats.errors == 2  # Unreadable, twice (determinism check)
    with pytest.raises(PermissionError), sandboxed(tmp_path / "elsewhere", deny=True):
        parent.open("rb")


def test_sandbox_records_opens_sockets_and_processes(tmp_path: Path) -> None:
    import socket
    import subprocess

    with pytest.raises(SandboxViolation, match="open"), sandboxed(tmp_path, deny=False):
        Path("/etc/hostname").read_bytes()
    with pytest.raises(SandboxViolation, match=r"socket\.connect"), sandboxed(tmp_path, deny=False):  # noqa: SIM117
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect(("127.0.0.1", 9))
    with pytest.raises(SandboxViolation, match="subprocess"), sandboxed(tmp_path, deny=False):  # noqa: SIM117
        with contextlib.suppress(OSError):
            subprocess.run(["true"], check=False)
    (tmp_path / "inside").write_bytes(b"ok")
    with sandboxed(tmp_path, deny=False):
        assert (tmp_path / "inside").read_bytes() == b"ok"


def test_target_secrets_outside_the_sandbox_are_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("outside-secret-value\n")
    doc = (
        "management: {url: 'http://127.0.0.1:1', subscription_id: s, service: x, deployment: d,"
        f" key: {{file: {outside}}}}}\nwinrm: {{password: {{env: VMR_FUZZ_SECRET}}}}\n"
    ).encode()
    contract = Contract(TARGETS["target"], determinism_every=1)
    contract(doc)  # the secret file is refused (read as unreadable), so not a crash, and never read
    assert contract.stats.errors == 0
    from harness.live.target import load_target

    target = load_target(write_input("check.vmrtarget.yml", doc))
    with sandboxed(sandbox(), deny=True):
        masker = target.masker()
    assert masker("outside-secret-value") == "outside-secret-value"


def test_sparse_inputs_round_trip() -> None:
    data = bytes(4096) + b"x" * 700 + bytes(3000) + b"y"
    encoded = sparse_encode(data, name=2)
    assert len(encoded) < 1300
    source = MemorySource(encoded)
    assert source.size == len(data)
    assert source.read_at(0, len(data)) == data
    assert source.read_at(4090, 20) == data[4090:4110]
