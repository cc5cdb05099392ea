"""Statistics of load-balancer rotation detection (coupon collector, zero-hit bounds, χ²). Pure functions, no I/O.

Model: every *new* TCP connection lands on instance i with probability pᵢ (1/n for an ideal 5-tuple hash),
independently of the others.

* **Seeing every instance** (coupon collector). After N requests, by inclusion–exclusion,
  ``P(all seen) = Σ_{j=0..n} (−1)^j C(n, j) (1 − j/n)^N`` (uniform), or
  ``Σ_{S ⊆ [n]} (−1)^{|S|} (1 − Σ_{i∈S} pᵢ)^N`` in general. :func:`samples_for_all` is the smallest N with
  ``P(all seen) ≥ c``; computed exactly with integers for the uniform case (n = 3: 15 for 99 %, 20 for 99.9 %).
* **An instance has left rotation.** Were it still in rotation with share p, the chance that it gets none
  of k requests is ``(1 − p)^k``; k samples with zero hits reject "still in rotation" with confidence
  ``1 − (1 − p)^k``. :func:`samples_to_reject` is the smallest k with ``(1 − p)^k ≤ 1 − c``
  (n = 3, p = 1/3: 12 for 99 %, 18 for 99.9 %).
* **Spread.** Counts per instance against a uniform spread: max/min ratio and Pearson's χ² with its
  p-value (n − 1 degrees of freedom; the regularised upper incomplete gamma function, no SciPy).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "Spread",
    "chi2_sf",
    "confidence_of_zero_hits",
    "expected_samples",
    "prob_all_seen",
    "prob_all_seen_weighted",
    "prob_zero_hits",
    "samples_for_all",
    "samples_for_all_union",
    "samples_for_all_weighted",
    "samples_to_reject",
    "spread",
]

MAX_WEIGHTED = 16  # subsets of up to 2**16 instances for the non-uniform inclusion–exclusion


def _check_confidence(c: float) -> None:
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {c!r}")


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of instances must be a positive integer, got {n!r}")


def _all_seen_numerator(n: int, samples: int) -> int:
    """``n^N · P(all seen)`` as an exact integer: Σ (−1)^j C(n, j) (n − j)^N."""
    return sum((-1) ** j * math.comb(n, j) * (n - j) ** samples for j in range(n + 1))


def prob_all_seen(n: int, samples: int) -> float:
    """P(every one of ``n`` equally likely instances is seen in ``samples`` independent requests)."""
    _check_n(n)
    if samples < n:
        return 0.0
    return float(Fraction(_all_seen_numerator(n, samples), n**samples))


def samples_for_all_union(n: int, confidence: float) -> int:
    """The union-bound sample count ``⌈ln(n/δ) / −ln(1 − 1/n)⌉`` (δ = 1 − c); never below the exact one."""
    _check_n(n)
    _check_confidence(confidence)
    if n == 1:
        return 1
    delta = 1.0 - confidence
    return max(n, math.ceil(math.log(n / delta) / -math.log1p(-1.0 / n)))


def samples_for_all(n: int, confidence: float) -> int:
    """The smallest N with P(all ``n`` equally likely instances seen in N requests) ≥ ``confidence``.

    Exact (integer inclusion–exclusion, binary search below the union bound). n = 1 needs 1 request.
    """
    _check_n(n)
    _check_confidence(confidence)
    if n == 1:
        return 1
    target = Fraction(confidence)
    lo, hi = n, samples_for_all_union(n, confidence)
    while Fraction(_all_seen_numerator(n, hi), n**hi) < target:  # pragma: no cover - the bound is an upper bound
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if Fraction(_all_seen_numerator(n, mid), n**mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def prob_all_seen_weighted(shares: Sequence[float], samples: int) -> float:
    """P(all instances seen) when instance i gets a share ``shares[i]`` of new connections (they are
    normalised to sum 1). Inclusion–exclusion over subsets; at most :data:`MAX_WEIGHTED` instances."""
    if not shares:
        raise ValueError("no instances")
    if len(shares) > MAX_WEIGHTED:
        raise ValueError(f"at most {MAX_WEIGHTED} instances for the weighted computation")
    if any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError("shares must be non-negative and not all zero")
    total = float(sum(shares))
    p = [s / total for s in shares]
    if any(x == 0 for x in p):
        return 0.0
    terms = []
    for size in range(len(p) + 1):
        for subset in itertools.combinations(p, size):
            rest = max(0.0, 1.0 - math.fsum(subset))
            terms.append((-1) ** size * rest**samples)
    return min(1.0, max(0.0, math.fsum(terms)))


def samples_for_all_weighted(shares: Sequence[float], confidence: float, limit: int = 100_000) -> int:
    """The smallest N with :func:`prob_all_seen_weighted` ≥ ``confidence`` (for a skewed hash)."""
    _check_confidence(confidence)
    lo, hi = len(shares), len(shares)
    while prob_all_seen_weighted(shares, hi) < confidence:
        hi *= 2
        if hi > limit:
            raise ValueError(f"more than {limit} samples needed: an instance's share is (almost) zero")
    while lo < hi:
        mid = (lo + hi) // 2
        if prob_all_seen_weighted(shares, mid) >= confidence:
            hi = mid
        else:
            lo = mid + 1
    return lo


def expected_samples(n: int) -> float:
    """E[requests until all ``n`` equally likely instances are seen] = n · H_n."""
    _check_n(n)
    return n * math.fsum(1.0 / k for k in range(1, n + 1))


def prob_zero_hits(share: float, samples: int) -> float:
    """P(an instance receiving ``share`` of new connections gets none of ``samples`` requests) = (1 − p)^k."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share is between 0 and 1, got {share!r}")
    if samples < 0:
        raise ValueError("samples must not be negative")
    return (1.0 - share) ** samples


def confidence_of_zero_hits(share: float, samples: int) -> float:
    """The confidence that an instance with zero hits in ``samples`` requests is out of rotation
    (rejecting "still in rotation with ``share``"): 1 − (1 − p)^k."""
    return 1.0 - prob_zero_hits(share, samples)


def samples_to_reject(share: float, confidence: float) -> int:
    """The smallest k with (1 − p)^k ≤ 1 − c: zero hits in k requests show the instance is out."""
    _check_confidence(confidence)
    if not 0.0 < share <= 1.0:
        raise ValueError(f"a share is in (0, 1], got {share!r}")
    if share == 1.0:
        return 1
    k = math.ceil(math.log(1.0 - confidence) / math.log1p(-share))
    # guard against rounding right at an integer
    while k > 1 and prob_zero_hits(share, k - 1) <= 1.0 - confidence:
        k -= 1
    while prob_zero_hits(share, k) > 1.0 - confidence:
        k += 1
    return max(1, k)


# ---- spread -----------------------------------------------------------------------------------------


def _gamma_series(a: float, x: float) -> float:
    """Regularised lower incomplete gamma P(a, x) by its series (x < a + 1)."""
    term = total = 1.0 / a
    ap = a
    for _ in range(10_000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_cf(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) by Lentz's continued fraction (x ≥ a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(statistic: float, df: int) -> float:
    """P(χ²_df ≥ statistic): the p-value of a χ² statistic with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if statistic <= 0:
        return 1.0
    a, x = df / 2.0, statistic / 2.0
    if x < a + 1.0:
        return max(0.0, min(1.0, 1.0 - _gamma_series(a, x)))
    return max(0.0, min(1.0, _gamma_cf(a, x)))


@dataclass(frozen=True)
class Spread:
    """How evenly requests spread over the instances (against a uniform spread)."""

    total: int
    instances: int
    min_count: int
    max_count: int
    ratio: float | None  # max/min; None when an instance got nothing (infinite) or nothing was sampled
    chi2: float
    df: int
    p_value: float | None  # None with fewer than 2 instances or no samples
    min_share: float  # smallest observed share

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "instances": self.instances,
            "min": self.min_count,
            "max": self.max_count,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "chi2": round(self.chi2, 3),
            "df": self.df,
            "p_value": None if self.p_value is None else float(f"{self.p_value:.4g}"),
            "min_share": round(self.min_share, 4),
        }


def spread(counts: Mapping[str, int] | Sequence[int], instances: Sequence[str] | None = None) -> Spread:
    """Summarise ``counts`` (per instance). ``instances`` lists every instance that should get traffic,
    so that one with no hits counts as 0 (else only the keys of ``counts`` are used)."""
    if isinstance(counts, Mapping):
        names = list(instances) if instances is not None else list(counts)
        values = [int(counts.get(name, 0)) for name in names]
    else:
        values = [int(v) for v in counts]
    if any(v < 0 for v in values):
        raise ValueError("counts must not be negative")
    total, k = sum(values), len(values)
    if k == 0 or total == 0:
        return Spread(total, k, 0, 0, None, 0.0, max(k - 1, 0), None, 0.0)
    lo, hi = min(values), max(values)
    expected = total / k
    chi2 = math.fsum((v - expected) ** 2 / expected for v in values)
    p_value = chi2_sf(chi2, k - 1) if k >= 2 else None
    ratio = hi / lo if lo > 0 else None
    return Spread(total, k, lo, hi, ratio, chi2, k - 1, p_value, lo / total)
