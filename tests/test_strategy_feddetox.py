"""FedDetox wrapper: config broadcast, reply screening with logged reasons, per-round summary."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg

from fedsafe_plugin import FedDetox, FedSafeConfig
from fedsafe_plugin.validation import as_ndarrays, to_array_record

from flower_messages import as_server, train_instruction, train_reply

GLOBAL = {"lora_A": np.zeros((2, 4), np.float32), "lora_B": np.zeros((4, 2), np.float32)}


class StaticGrid(Grid):
    """A grid with fixed nodes; configure_train only asks it for node ids."""

    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes

    set_run = run = create_message = push_messages = pull_messages = send_and_receive = None


def _round(strategy, replies_spec, server_round=1):
    """Configure a round on nodes 1..n, then aggregate the given (arrays, metrics) replies."""
    as_server()
    messages = list(strategy.configure_train(server_round, to_array_record(GLOBAL), ConfigRecord(), StaticGrid(list(range(1, len(replies_spec) + 1)))))
    replies = [train_reply(m, arrays, metrics) for m, (arrays, metrics) in zip(messages, replies_spec)]
    return messages, strategy.aggregate_train(server_round, replies)


def _upd(value):
    return {k: np.full_like(v, value) for k, v in GLOBAL.items()}


def test_config_is_broadcast_in_every_train_message():
    cfg = FedSafeConfig.from_run_config({"fedsafe.privacy.enabled": True, "fedsafe.privacy.epsilon": 3.0})
    messages, _ = _round(FedDetox(FedAvg(), cfg), [(_upd(0.1), {"num-examples": 5})] * 2)
    for msg in messages:
        sent = msg.content["config"]
        assert sent["fedsafe.privacy.epsilon"] == 3.0 and sent["fedsafe.privacy.enabled"] is True
        assert FedSafeConfig.from_config_record({k: v for k, v in sent.items() if k.startswith("fedsafe.")}) == cfg


def test_bad_replies_are_dropped_with_node_and_reason(caplog):
    strategy = FedDetox(FedAvg(), FedSafeConfig.from_run_config({"fedsafe.validate.max-update-norm": 5.0}))
    nan = _upd(0.1)
    nan["lora_A"][0, 0] = np.nan
    spec = [
        (_upd(0.2), {"num-examples": 10}),
        (nan, {"num-examples": 10}),
        ({"lora_A": np.zeros((2, 4), np.float32)}, {"num-examples": 10}),
        ({"lora_A": np.zeros((4, 2), np.float32), "lora_B": GLOBAL["lora_B"]}, {"num-examples": 10}),
        (_upd(100.0), {"num-examples": 10}),
        (_upd(0.4), {"num-examples": 30}),
        (_upd(0.3), {"num-examples": float("inf")}),
    ]
    # Flower's simulation runtime turns off propagation of the "flwr" logger (run_simulation), so
    # listen on our logger directly rather than on the root logger caplog uses by default.
    fedsafe_log = logging.getLogger("flwr.fedsafe")
    fedsafe_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="flwr.fedsafe"):
            messages, (arrays, metrics) = _round(strategy, spec)
    finally:
        fedsafe_log.removeHandler(caplog.handler)
    summary = strategy.history[1]
    nodes = [m.metadata.dst_node_id for m in messages]
    assert summary.kept == [nodes[0], nodes[5]]
    assert "NaN or inf" in summary.dropped[nodes[1]]
    assert "keys differ" in summary.dropped[nodes[2]]
    assert "shape" in summary.dropped[nodes[3]]
    assert "exceeds the bound" in summary.dropped[nodes[4]]
    assert "finite non-negative" in summary.dropped[nodes[6]]
    assert f"dropping reply from node {nodes[1]}: array 'lora_A' contains NaN or inf" in caplog.text
    # FedAvg over the two good replies, weighted 10:30
    np.testing.assert_allclose(as_ndarrays(arrays)["lora_A"], np.full((2, 4), 0.35), rtol=1e-6)
    assert metrics["fedsafe.kept"] == 2 and metrics["fedsafe.dropped"] == 5


def test_round_goes_on_only_with_enough_replies():
    strategy = FedDetox(FedAvg(), FedSafeConfig.from_run_config({"fedsafe.validate.min-replies": 2}))
    bad = _upd(np.nan)
    _, (arrays, metrics) = _round(strategy, [(_upd(0.1), {"num-examples": 1}), (bad, {"num-examples": 1})])
    assert arrays is None and metrics["fedsafe.kept"] == 1
    _, (arrays, _) = _round(strategy, [(_upd(0.1), {"num-examples": 1})] * 2, server_round=2)
    assert arrays is not None


def test_exhausted_budget_is_left_out_and_metrics_summarised():
    strategy = FedDetox(FedAvg())
    spec = [
        (_upd(0.1), {"num-examples": 4, "train-loss": 0.5, "fedsafe.sanitize.replace": 3, "fedsafe.dp.epsilon": 1.0, "fedsafe.dp.exhausted": 0}),
        (_upd(0.3), {"num-examples": 4, "train-loss": 0.7, "fedsafe.sanitize.replace": 2, "fedsafe.dp.epsilon": 2.0, "fedsafe.dp.exhausted": 0}),
        (None, {"num-examples": 4, "train-loss": 0.0, "fedsafe.sanitize.replace": 1, "fedsafe.dp.epsilon": 3.0, "fedsafe.dp.exhausted": 1}),
    ]
    messages, (arrays, metrics) = _round(strategy, spec)
    summary = strategy.history[1]
    assert summary.exhausted == [messages[2].metadata.dst_node_id] and not summary.dropped
    np.testing.assert_allclose(as_ndarrays(arrays)["lora_B"], np.full((4, 2), 0.2), rtol=1e-6)
    assert metrics["fedsafe.sanitize.replace"] == 6
    assert (metrics["fedsafe.dp.epsilon-min"], metrics["fedsafe.dp.epsilon-max"]) == (1.0, 3.0)
    assert metrics["train-loss"] == pytest.approx(0.6)
    assert "budget exhausted on 1 node(s)" in summary.describe()


def test_client_errors_are_dropped_not_fatal():
    from flwr.app import Error, Message

    strategy = FedDetox(FedAvg())
    as_server()
    msgs = list(strategy.configure_train(1, to_array_record(GLOBAL), ConfigRecord(), StaticGrid([7, 8])))
    replies = [train_reply(msgs[0], _upd(0.1), {"num-examples": 1}), Message(Error(code=2, reason="boom"), reply_to=msgs[1])]
    arrays, _ = strategy.aggregate_train(1, replies)
    failed = msgs[1].metadata.dst_node_id  # FedAvg samples nodes in random order
    assert arrays is not None and strategy.history[1].dropped == {failed: "client error: boom"}


def test_secure_aggregation_refuses_incompatible_client_dp():
    from fedsafe_plugin import ConfigError

    both = {"fedsafe.secagg.mode": "secagg+", "fedsafe.client-dp.mode": "server", "fedsafe.client-dp.num-sampled-clients": 2}
    with pytest.raises(ConfigError, match="fedsafe.client-dp.mode"):
        FedDetox(FedAvg(), FedSafeConfig.from_run_config(both))
    with pytest.raises(ValueError, match="Krum"):
        from flwr.serverapp.strategy import Krum

        FedDetox(Krum(), FedSafeConfig.from_run_config({"fedsafe.secagg.mode": "secagg+"}))
    coarse = {"fedsafe.secagg.mode": "secagg+", "fedsafe.secagg.bits": 16, "fedsafe.client-dp.mode": "client",
              "fedsafe.client-dp.num-sampled-clients": 2}
    with pytest.raises(ConfigError, match="fedsafe.secagg.bits: client-level DP needs at least 20 bits"):
        FedDetox(FedAvg(), FedSafeConfig.from_run_config(coarse))


@pytest.mark.parametrize("mode", ["server", "client"])
def test_client_level_dp_takes_the_plain_mean(mode):
    """The DP noise is sized for a plain mean of clipped updates, so num-examples must not weigh in."""
    cfg = FedSafeConfig.from_run_config({"fedsafe.client-dp.mode": mode, "fedsafe.client-dp.num-sampled-clients": 2,
                                         "fedsafe.client-dp.noise-multiplier": 0.0, "fedsafe.client-dp.clipping-norm": 100.0})
    _, (arrays, _) = _round(FedDetox(FedAvg(), cfg), [(_upd(0.1), {"num-examples": 1}), (_upd(0.5), {"num-examples": 99})])
    np.testing.assert_allclose(as_ndarrays(arrays)["lora_A"], 0.3, rtol=1e-6)


def test_wraps_server_side_optimisers():
    strategy = FedDetox(FedAdam(eta=0.1))
    _, (arrays, _) = _round(strategy, [(_upd(0.1), {"num-examples": 1})] * 2)
    assert not np.allclose(as_ndarrays(arrays)["lora_A"], 0.0)
