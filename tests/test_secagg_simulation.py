"""Both secure modes inside Flower's own simulation runtime: FedDetox(FedAvg) + `secagg_mod` on the clients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from fedsafe_plugin.client.mods import fedsafe_mod
from fedsafe_plugin.config import FedSafeConfig, SanitizeConfig, SecAggConfig
from fedsafe_plugin.privacy.secagg import ckks as C
from fedsafe_plugin.privacy.secagg import secagg_mod
from fedsafe_plugin.strategies.feddetox import FedDetox

CLIENTS, ROUNDS = 4, 2
SHAPES = {"lora_A": (4, 32), "lora_B": (32, 4)}
RESULT: dict[str, object] = {}


def _update(partition: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100 + partition)
    return {k: rng.uniform(-0.05, 0.05, size=s).astype(np.float32) for k, s in SHAPES.items()}


def _weight(partition: int) -> float:
    return float(10 * (partition + 1))


def _initial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def _apps(config: FedSafeConfig) -> tuple[ServerApp, ClientApp]:
    client = ClientApp()

    @client.train(mods=[secagg_mod, fedsafe_mod])
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        received = msg.content.array_records["arrays"]
        new = {k: Array(received[k].numpy() + _update(partition)[k]) for k in received}
        metrics = MetricRecord({"num-examples": _weight(partition)})
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}), reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        inner = FedAvg(fraction_evaluate=0.0, min_train_nodes=CLIENTS, min_available_nodes=CLIENTS)
        strategy = FedDetox(inner, config)
        initial = ArrayRecord({k: Array(v) for k, v in _initial().items()})
        RESULT["result"] = strategy.start(grid=grid, initial_arrays=initial, num_rounds=ROUNDS, timeout=120)

    return server, client


def _expected() -> dict[str, np.ndarray]:
    weights = [_weight(p) for p in range(CLIENTS)]
    mean = {k: sum(w * _update(p)[k] for p, w in enumerate(weights)) / sum(weights) for k in SHAPES}
    return {k: v + ROUNDS * mean[k] for k, v in _initial().items()}


def _run(config: FedSafeConfig) -> ArrayRecord:
    RESULT.clear()
    server, client = _apps(config)
    run_simulation(server, client, num_supernodes=CLIENTS, backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    return RESULT["result"].arrays


@pytest.mark.e2e
def test_secagg_plus_in_flower_simulation():
    config = FedSafeConfig(sanitize=SanitizeConfig(enabled=False), secagg=SecAggConfig(mode="secagg+", neighbours=2))
    arrays = _run(config)
    for key, want in _expected().items():
        assert np.max(np.abs(arrays[key].numpy() - want)) < 1e-5


@pytest.mark.e2e
def test_ckks_in_flower_simulation(tmp_path: Path):
    C.write_keys(tmp_path)
    config = FedSafeConfig(sanitize=SanitizeConfig(enabled=False), secagg=SecAggConfig(mode="ckks", ckks_context=str(tmp_path)))
    arrays = _run(config)
    assert C.is_encrypted(arrays)  # the server's final model is ciphertext
    final = C.decrypt(C.load(tmp_path, "secret"), arrays)
    for key, want in _expected().items():
        assert np.max(np.abs(final[key] - want)) < 1e-3
