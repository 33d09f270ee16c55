"""Client-level DP (client-side clipping) under SecAgg+: FedDetox(FedAvg) with Flower's DP wrapper and
`fixedclipping_mod`, every client behind `fedsafe_mods()`, through the in-process grid."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg

from fedsafe_plugin.client.mods import fedsafe_mods
from fedsafe_plugin.config import ClientDPConfig, FedSafeConfig, SecAggConfig
from fedsafe_plugin.privacy.secagg import wire as W
from fedsafe_plugin.privacy.secagg.inprocess import LocalGrid, fixed_update_app
from fedsafe_plugin.strategies.feddetox import FedDetox

N, CLIP = 5, 0.5
SHAPES = {"lora_A": (4, 16), "lora_B": (16, 4)}


def _setup(accounting: bool, noise: float = 1e-6):
    rng = np.random.default_rng(3)
    nodes = list(range(101, 101 + N))
    global_arrays = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    # Norms from about 0.2 to 3: some below the clipping norm, most above; very unequal weights.
    updates = {n: {k: (rng.uniform(-1, 1, size=s) * 0.05 * (i + 1)).astype(np.float32) for k, s in SHAPES.items()}
               for i, n in enumerate(nodes)}
    weights = {n: float(10 ** i) for i, n in enumerate(nodes)}
    cfg = FedSafeConfig(
        secagg=SecAggConfig(mode="secagg+", clip_range=2.0),
        client_dp=ClientDPConfig(mode="client", noise_multiplier=noise, clipping_norm=CLIP,
                                 num_sampled_clients=N, accounting=accounting),
    )
    strategy = FedDetox(FedAvg(min_train_nodes=N, min_available_nodes=N, fraction_evaluate=0.0), cfg)
    grid = LocalGrid({n: fixed_update_app(updates[n], weights[n]) for n in nodes}, mods=fedsafe_mods())
    return strategy, grid, global_arrays, updates


def _round(strategy: FedDetox, grid: LocalGrid, global_arrays: dict[str, np.ndarray]):
    record = ArrayRecord({k: Array(v) for k, v in global_arrays.items()})
    messages = strategy.configure_train(1, record, ConfigRecord({}), grid)
    return strategy.aggregate_train(1, grid.send_and_receive(messages))


def _clipped_mean(updates: dict, nodes: list[int]) -> dict[str, np.ndarray]:
    def clip(u):
        norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in u.values()))
        return {k: v * min(1.0, CLIP / norm) for k, v in u.items()}

    clipped = [clip(updates[n]) for n in nodes]
    return {k: sum(c[k] for c in clipped) / len(clipped) for k in SHAPES}


@pytest.mark.parametrize("accounting", [False, True])
def test_clipped_plain_mean_of_masked_updates_is_released_and_accounted(accounting):
    strategy, grid, global_arrays, updates = _setup(accounting)
    arrays, _ = _round(strategy, grid, global_arrays)
    assert arrays is not None, strategy.history[1].describe()
    assert not any(r.has_error() for r in grid.received), [r.error.reason for r in grid.received if r.has_error()]
    want = _clipped_mean(updates, sorted(updates))
    for k, g in global_arrays.items():
        # SecAgg+ quantisation (clip range 2, 24 bits) and the 1e-6 noise multiplier stay far below 1e-3
        np.testing.assert_allclose(arrays[k].numpy() - g, want[k], atol=1e-3)
    dp = strategy.strategy
    if accounting:
        assert dp.accountant.get_privacy_spent().num_releases == 1


def test_noise_is_sized_for_the_plain_mean():
    noise = 1.0
    strategy, grid, global_arrays, updates = _setup(False, noise=noise)
    arrays, _ = _round(strategy, grid, global_arrays)
    want = _clipped_mean(updates, sorted(updates))
    residual = np.concatenate([(arrays[k].numpy() - global_arrays[k] - want[k]).ravel() for k in SHAPES])
    # Flower's wrapper: std = noise * C / num_sampled_clients on every coordinate (128 of them)
    assert np.std(residual) == pytest.approx(noise * CLIP / N, rel=0.25)


def test_a_dropout_skips_an_accounted_round_and_not_a_plain_one():
    for accounting in (True, False):
        strategy, grid, global_arrays, updates = _setup(accounting)
        gone = sorted(updates)[0]
        grid.drop = lambda stage, node: stage == W.MASK and node == gone
        arrays, _ = _round(strategy, grid, global_arrays)
        if accounting:  # Flower's accounted wrapper needs every sampled client (see client_dp.py)
            assert arrays is None
            assert strategy.strategy.accountant.get_privacy_spent().num_releases == 0
        else:
            want = _clipped_mean(updates, [n for n in sorted(updates) if n != gone])
            for k, g in global_arrays.items():
                np.testing.assert_allclose(arrays[k].numpy() - g, want[k], atol=1e-3)
