"""The fuzz targets in the test suite: every kept corpus and regression input through the contract, and a fixed
number of mutated inputs per target (a small deterministic mutator, no atheris process), so a parser change
that breaks the contract fails here before any long fuzzing run."""

from __future__ import annotations

import random
import struct

import pytest

from tests.fuzz.targets import TARGETS, Contract, corpus_dir, inputs, regressions_dir

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


@pytest.mark.parametrize("name", list(TARGETS))
def test_kept_corpus_and_regressions_keep_the_contract(name: str) -> None:
    contract = Contract(TARGETS[name], determinism_every=1, hang_seconds=SMOKE_HANG_SECONDS)
    files = inputs(corpus_dir(name)) + inputs(regressions_dir(name))
    failures = []
    for path in files:
        try:
            contract(path.read_bytes())
        except Exception as exc:
            failures.append(f"{path.relative_to(corpus_dir(name).parent.parent)}: {type(exc).__name__}: {exc}"[:400])
    assert not failures, "\n".join(failures)


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
