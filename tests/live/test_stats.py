"""Rotation statistics (harness.facts.live.stats) against closed forms and brute force."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from harness.facts.live import stats

# live-reference §7 table: n -> (95 %, 99 %, 99.9 %, 1 - 1e-6)
REFERENCE = {
    2: (6, 8, 11, 21),
    3: (11, 15, 20, 37),
    4: (16, 21, 29, 53),
    5: (21, 28, 39, 70),
    8: (38, 51, 68, 120),
    10: (51, 66, 88, 153),
    20: (117, 149, 194, 328),
}


@pytest.mark.parametrize("n", sorted(REFERENCE))
def test_samples_for_all_matches_the_reference_table(n):
    got = tuple(stats.samples_for_all(n, c) for c in (0.95, 0.99, 0.999, 1 - 1e-6))
    assert got == REFERENCE[n]


def test_three_instances_need_15_for_99_and_20_for_999():
    assert stats.samples_for_all(3, 0.99) == 15
    assert stats.samples_for_all(3, 0.999) == 20


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("c", [0.9, 0.99, 0.999])
def test_samples_for_all_is_the_smallest_n(n, c):
    need = stats.samples_for_all(n, c)
    assert stats.prob_all_seen(n, need) >= c
    assert stats.prob_all_seen(n, need - 1) < c
    assert need <= stats.samples_for_all_union(n, c)


def test_prob_all_seen_by_enumeration():
    # 3 instances, 5 requests: count the sequences that contain all three
    n, k = 3, 5
    hits = sum(1 for seq in itertools.product(range(n), repeat=k) if len(set(seq)) == n)
    assert stats.prob_all_seen(n, k) == pytest.approx(hits / n**k)
    assert stats.prob_all_seen(3, 2) == 0.0
    assert stats.prob_all_seen(1, 1) == 1.0


def test_weighted_equals_uniform_for_equal_shares_and_reproduces_the_skew_numbers():
    assert stats.prob_all_seen_weighted([1, 1, 1], 15) == pytest.approx(stats.prob_all_seen(3, 15))
    # live-reference §7: 99 % needs 21 (p_min 0.2), 44 (0.1), 90 (0.05) for N = 3
    assert stats.samples_for_all_weighted([0.2, 0.4, 0.4], 0.99) == 21
    assert stats.samples_for_all_weighted([0.1, 0.45, 0.45], 0.99) == 44
    assert stats.samples_for_all_weighted([0.05, 0.475, 0.475], 0.99) == 90
    assert stats.prob_all_seen_weighted([0, 1], 10) == 0.0
    with pytest.raises(ValueError):
        stats.samples_for_all_weighted([0.0, 1.0], 0.9, limit=100)


def test_expected_samples_is_n_harmonic():
    assert stats.expected_samples(3) == pytest.approx(5.5)
    assert stats.expected_samples(10) == pytest.approx(29.29, abs=0.01)


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [(3, 0.99, 12), (3, 0.999, 18), (5, 0.99, 21), (5, 0.999, 31), (10, 0.99, 44), (10, 0.999, 66)],
)
def test_samples_to_reject_matches_the_reference(n, c, k):
    assert stats.samples_to_reject(1 / n, c) == k
    assert stats.prob_zero_hits(1 / n, k) <= 1 - c < stats.prob_zero_hits(1 / n, k - 1)
    assert stats.confidence_of_zero_hits(1 / n, k) >= c


def test_zero_hit_probability():
    assert stats.prob_zero_hits(1 / 3, 0) == 1.0
    assert stats.prob_zero_hits(1 / 3, 18) == pytest.approx((2 / 3) ** 18)
    assert stats.confidence_of_zero_hits(1 / 3, 18) == pytest.approx(1 - (2 / 3) ** 18)
    assert stats.samples_to_reject(1.0, 0.999) == 1


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (stats.samples_for_all, (0, 0.99)),
        (stats.samples_for_all, (3, 1.0)),
        (stats.samples_for_all, (3, 0.0)),
        (stats.samples_to_reject, (0.0, 0.99)),
        (stats.prob_zero_hits, (1.5, 3)),
        (stats.prob_zero_hits, (0.5, -1)),
    ],
)
def test_bad_arguments_are_value_errors(call, args):
    with pytest.raises(ValueError):
        call(*args)


def test_chi2_survival_function_known_values():
    assert stats.chi2_sf(3.841, 1) == pytest.approx(0.05, abs=2e-4)
    assert stats.chi2_sf(5.991, 2) == pytest.approx(0.05, abs=2e-4)
    assert stats.chi2_sf(2.0, 2) == pytest.approx(math.exp(-1.0))  # df = 2: exp(-x/2)
    assert stats.chi2_sf(30.0, 2) == pytest.approx(math.exp(-15.0), rel=1e-9)
    assert stats.chi2_sf(0.0, 3) == 1.0
    assert stats.chi2_sf(11.345, 3) == pytest.approx(0.01, abs=1e-4)


def test_spread_summary():
    even = stats.spread({"a": 20, "b": 20, "c": 20})
    assert (even.ratio, even.chi2, even.p_value) == (1.0, 0.0, 1.0)
    skewed = stats.spread({"a": 50, "b": 5}, ["a", "b", "c"])
    assert skewed.instances == 3 and skewed.min_count == 0 and skewed.ratio is None
    assert skewed.p_value < 1e-10 and skewed.min_share == 0.0
    assert stats.spread([]).p_value is None
    assert stats.spread({"a": 7}).p_value is None
    assert stats.spread([10, 5]).to_json()["ratio"] == 2.0


def test_monte_carlo_agrees_with_the_bound():
    """A seeded simulation of a uniform hash: ≥ 99 % of trials see all 3 within the 99 % bound."""
    rng = random.Random(1234)
    bound = stats.samples_for_all(3, 0.99)
    trials, within = 4000, 0
    for _ in range(trials):
        seen: set[int] = set()
        for _draw in range(bound):
            seen.add(rng.randrange(3))
            if len(seen) == 3:
                within += 1
                break
    assert within / trials >= 0.985
