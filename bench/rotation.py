"""Requests needed to see every instance through the local fabric's VIP, against the coupon-collector bounds.

For N = 2, 3, 5, 10 instances: a generated service model (one VirtualMachineRole of N instances, one http
input endpoint) is brought up on a local fabric (HAProxy ``balance hash src_port``); each of R repetitions
sends requests through the VIP, **a new TCP connection each** (the rotation stage's own sampler), until all
N instances have answered. The table compares mean / p95 / p99 / max with the theory of
``harness.facts.live.stats``: E[T] = N·H_N and the smallest N with P(all seen) ≥ 95 %, 99 %, 99.9 % (which are
also the theoretical p95 / p99 / p99.9 of T). "in 99.9%" is the share of repetitions that finished within
the 99.9 % bound (the stage's default budget).

    python -m bench rotation          # or: python -c "from bench import rotation; rotation.main(30)"
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SIZES = (2, 3, 5, 10)
ROLE = "Web"

CSDEF = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="RotationBench" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <VirtualMachineRole name="{role}" vmsize="Small">
    <Endpoints>
      <InputEndpoint name="HttpIn" protocol="http" port="80" localPort="80" />
    </Endpoints>
  </VirtualMachineRole>
</ServiceDefinition>
"""

CSCFG = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="RotationBench" osFamily="2" osVersion="*" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="{role}">
    <OsImage href="bench.vhd" />
    <Instances count="{count}" />
  </Role>
</ServiceConfiguration>
"""


def write_model(folder: Path, count: int) -> tuple[Path, Path]:
    csdef, cscfg = folder / "ServiceDefinition.csdef", folder / "ServiceConfiguration.cscfg"
    csdef.write_text(CSDEF.format(role=ROLE), "utf-8")
    cscfg.write_text(CSCFG.format(role=ROLE, count=count), "utf-8")
    return csdef, cscfg


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def measure(count: int, repeat: int, state_root: Path) -> dict[str, Any]:
    """Bring a fabric of ``count`` instances up, run ``repeat`` collections, bring it down."""
    from harness.fabric.client import up
    from harness.facts.live import stats
    from harness.live.sampling import ProbeSettings, Sampler

    model = state_root / f"model-{count}"
    model.mkdir()
    csdef, cscfg = write_model(model, count)
    started = time.monotonic()
    fabric = up(state_root / f"fabric-{count}", csdef=csdef, cscfg=cscfg, step_seconds=0.1)
    up_seconds = time.monotonic() - started
    try:
        endpoint = fabric.endpoint("HttpIn")
        names = [inst["id"] for inst in fabric.instances if inst["role"] == ROLE]
        assert len(names) == count, names
        settings = ProbeSettings(body_regex=None, banner_regex=None, confidence=0.999)
        cap = 10 * stats.samples_for_all(count, 0.999999)
        needed: list[int] = []
        totals: dict[str, int] = dict.fromkeys(names, 0)
        errors = 0
        t0 = time.monotonic()
        requests = 0
        for _ in range(repeat):
            sampler = Sampler("127.0.0.1", int(endpoint["public_port"]), "http", settings, instances=names)
            sampler.run(until=lambda s=sampler: len(s.counts) == count, requests=cap)
            requests += len(sampler.samples)
            for name, hits in sampler.counts.items():
                totals[name] = totals.get(name, 0) + hits
            errors += sum(sampler.errors.values())
            if len(sampler.counts) == count:
                needed.append(max(sampler.first_seen.values()))  # answers until the last new instance
            else:
                needed.append(cap + 1)  # did not see them all: counted past the cap
        sampling = time.monotonic() - t0
    finally:
        fabric.down()
    b95, b99, b999 = (stats.samples_for_all(count, c) for c in (0.95, 0.99, 0.999))
    answered = sum(totals.values())
    shares = [totals[name] / answered for name in names] if answered else []
    try:  # the 99.9 % bound for the shares this hash actually gave (the skew sensitivity)
        skewed = stats.samples_for_all_weighted([max(s, 1e-6) for s in shares], 0.999) if shares else None
    except ValueError:
        skewed = None
    return {
        "instances": count,
        "repeat": repeat,
        "mean": statistics.fmean(needed),
        "p95": percentile(needed, 0.95),
        "p99": percentile(needed, 0.99),
        "max": max(needed),
        "expected": stats.expected_samples(count),
        "bound_95": b95,
        "bound_99": b99,
        "bound_999": b999,
        "within_999": sum(1 for n in needed if n <= b999) / len(needed),
        "within_99": sum(1 for n in needed if n <= b99) / len(needed),
        "errors": errors,
        "requests": requests,
        "shares": {name: round(share, 4) for name, share in zip(names, shares, strict=True)},
        "min_share": min(shares) if shares else 0.0,
        "max_share": max(shares) if shares else 0.0,
        "bound_999_observed_shares": skewed,
        "ms_per_request": 1000 * sampling / max(requests, 1),
        "fabric_up_seconds": up_seconds,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'N':>3} {'R':>4} | {'mean':>6} {'E[T]':>6} | {'p95':>4} {'b95':>4} | {'p99':>4} {'b99':>4} | "
        f"{'max':>4} {'b99.9':>5} | {'in 99%':>6} {'in 99.9%':>8} | {'shares min-max':>14} {'b99.9 obs':>9} | "
        f"{'err':>3} {'ms/req':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['instances']:>3} {r['repeat']:>4} | {r['mean']:>6.2f} {r['expected']:>6.2f} | {r['p95']:>4} "
            f"{r['bound_95']:>4} | {r['p99']:>4} {r['bound_99']:>4} | {r['max']:>4} {r['bound_999']:>5} | "
            f"{100 * r['within_99']:>5.1f}% {100 * r['within_999']:>7.1f}% | "
            f"{r['min_share']:>6.3f}-{r['max_share']:<7.3f} {r['bound_999_observed_shares'] or '-':>9} | "
            f"{r['errors']:>3} {r['ms_per_request']:>6.2f}"
        )
    return "\n".join(lines)


def main(repeat: int = 30, sizes: tuple[int, ...] = SIZES) -> int:
    """Measure every size, print the table, write bench/out/rotation.json. Returns 0 (1 when a fabric failed)."""
    rows: list[dict[str, Any]] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="vmr-rotation-bench-") as tmp:
        for count in sizes:
            try:
                rows.append(measure(count, repeat, Path(tmp)))
            except Exception as exc:  # report and go on with the other sizes
                print(f"rotation bench: N={count} failed: {exc}", file=sys.stderr)
                status = 1
    print(f"\nLoad-balancer rotation: requests (new TCP connection each) until all N instances answered, R={repeat}")
    print("(b95/b99/b99.9: theoretical bounds = quantiles of T under a uniform 5-tuple hash, harness.facts.live.stats;")
    print(" shares: each instance's share of all answers; b99.9 obs: the 99.9 % bound for those shares)\n")
    print(table(rows))
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "rotation.json").write_text(json.dumps({"repeat": repeat, "rows": rows}, indent=2), "utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
