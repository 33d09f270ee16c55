"""SecAgg+ pieces on their own: graph and thresholds, fixed-point encoding, strategy guard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsafe_plugin.privacy.secagg import check_inner_strategy
from fedsafe_plugin.privacy.secagg.graph import neighbours, plan
from fedsafe_plugin.privacy.secagg.quantize import decode, encode, error_bound


@pytest.mark.parametrize("n", [2, 3, 5, 10, 17, 100])
@pytest.mark.parametrize("k", [0, 1, 4, 99])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_plan_keeps_shamir_above_half_and_graph_regular(n, k, fraction):
    rules = plan(n, k, fraction)
    assert min(n - 1, math.ceil(math.log2(n))) <= rules.k <= n - 1
    assert rules.shamir > (rules.k + 1) / 2  # no two disjoint holder sets can both reconstruct
    assert rules.min_survivors >= max(rules.shamir, math.ceil(fraction * n))
    graph = neighbours(list(range(100, 100 + n)), rules.k, b"seed")
    assert all(len(v) == rules.k and u not in v for u, v in graph.items())
    assert all(u in graph[v] for u, vs in graph.items() for v in vs)  # symmetric


def test_graph_depends_on_the_seed_and_classic_is_complete():
    nodes = list(range(30))
    assert neighbours(nodes, 4, b"a") != neighbours(nodes, 4, b"b")
    assert all(len(v) == 29 for v in neighbours(nodes, 29, b"a").values())
    assert plan(100, 0, 0.5).k == 14  # auto: 2 * ceil(log2 n)


def test_fixed_point_sum_is_within_the_bound_and_unbiased():
    rng = np.random.default_rng(0)
    clip, bits, m = 0.5, 12, 9
    updates = rng.uniform(-0.7, 0.7, size=(m, 20_000))
    weights = rng.integers(1, 50, size=m).astype(float)
    shares = weights / weights.sum()
    total = np.zeros(20_000, dtype=np.uint32)
    for share, update in zip(shares, updates):
        total += encode(update, share, clip, bits, rng)
    got = decode(total, clip, bits)
    want = (shares[:, None] * np.clip(updates, -clip, clip)).sum(axis=0)
    assert np.max(np.abs(got - want)) <= error_bound(m, clip, bits)
    assert abs(np.mean(got - want)) < error_bound(m, clip, bits) / 20  # stochastic rounding has no bias


def test_full_scale_values_do_not_overflow_uint32():
    bits = 24
    total = np.zeros(4, dtype=np.uint32)
    for _ in range(3):
        total += encode(np.array([0.5, -0.5, 0.5, -0.5]), 1 / 3, 0.5, bits, np.random.default_rng(1))
    assert np.allclose(decode(total, 0.5, bits), [0.5, -0.5, 0.5, -0.5], atol=error_bound(3, 0.5, bits))


@pytest.mark.parametrize("name", ["Krum", "MultiKrum", "Bulyan", "FedMedian", "FedTrimmedAvg"])
def test_strategies_needing_individual_updates_are_refused(name):
    import flwr.serverapp.strategy as strategies

    strategy = getattr(strategies, name)()
    with pytest.raises(ValueError, match=f"{name} needs each client's individual update"):
        check_inner_strategy(strategy)


def test_mean_based_strategies_are_accepted():
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

    for strategy in (FedAvg(), FedProx(), FedAdam()):
        check_inner_strategy(strategy)


def test_shamir_any_threshold_subset_recovers_and_fewer_do_not():
    import itertools

    from fedsafe_plugin.privacy.secagg.primitives import join_shares, new_seed, split_secret

    for secret in (new_seed(), bytes(32), b"\xff" * 32):
        shares = split_secret(secret, 4, 7)
        assert all(join_shares(list(subset)) == secret for subset in itertools.combinations(shares, 4))
        assert join_shares(shares) == secret  # more than the threshold also works
        for subset in itertools.combinations(shares, 3):
            try:
                below = join_shares(list(subset))
            except ValueError:
                below = None
            assert below != secret
    with pytest.raises(ValueError):
        join_shares([shares[0], shares[0], shares[1], shares[2]])
