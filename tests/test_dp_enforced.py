"""With privacy on, only DP-SGD updates leave: the mod, the mixin and the server all refuse the rest."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.client import NumPyClient
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.serverapp.strategy import FedAvg

from fedsafe_plugin import FedDetox, FedDetoxClientMixin, FedDetoxLegacy, FedSafeConfig, FedSafeSession, fedsafe_mod
from fedsafe_plugin.privacy.accounting import EPSILON, STATE_KEY, Ledger
from fedsafe_plugin.training.lora import get_adapter_arrays
from fedsafe_plugin.training.tiny import build_tiny_lora_model
from fedsafe_plugin import TrainSettings
from fedsafe_plugin.validation import as_ndarrays

from flower_messages import train_instruction, train_reply
from test_strategy_feddetox import _round, _upd

PRIVATE = {"fedsafe.privacy.enabled": True, "fedsafe.privacy.epsilon": 8.0, "fedsafe.privacy.delta": 1e-3,
           "fedsafe.privacy.batch-size": 2, "fedsafe.privacy.local-steps": 2, "fedsafe.privacy.accountant": "rdp"}


@pytest.fixture(scope="module")
def tiny():
    model, tok = build_tiny_lora_model(r=2)
    samples = [(tok.encode(f"question {i}"), tok.encode(f" answer {i}")) for i in range(8)]
    return model, tok, samples


def _ctx():
    return Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})


def _mod_round(model, config, train, context=None):
    """One train message through fedsafe_mod; `train(fs)` is the app's training step."""
    msg = train_instruction(5, as_ndarrays(get_adapter_arrays(model)), config)

    def app(m, ctx):
        metrics = train(FedSafeSession.from_message(m, ctx))
        return train_reply(m, as_ndarrays(get_adapter_arrays(model)), {"num-examples": 8, **metrics})

    return fedsafe_mod(msg, context or _ctx(), app)


def test_mod_refuses_an_update_trained_outside_the_session(tiny):
    model, tok, samples = tiny
    reply = _mod_round(model, PRIVATE, lambda fs: {})  # the app forgot fs.train_*: plain training
    assert reply.has_error() and "did not train through FedSafeSession" in reply.error.reason
    assert not reply.has_content()


def test_mod_sends_a_private_sft_update_with_its_epsilon(tiny):
    model, tok, samples = tiny
    context = _ctx()
    reply = _mod_round(model, PRIVATE, lambda fs: fs.train_sft(model, samples, TrainSettings(), tok.pad_token_id), context)
    assert not reply.has_error()
    epsilon = reply.content["metrics"][EPSILON]
    assert 0 < epsilon <= 8.0 and STATE_KEY in context.state.config_records
    # Once private, always private: a later config with privacy off still needs a DP update.
    again = _mod_round(model, {}, lambda fs: {}, context)
    assert again.has_error() and "did not train through FedSafeSession" in again.error.reason


def test_session_trains_plain_sft_when_privacy_is_off(tiny):
    model, tok, samples = tiny
    reply = _mod_round(model, {}, lambda fs: fs.train_sft(model, samples, TrainSettings(steps=1), tok.pad_token_id))
    assert not reply.has_error() and EPSILON not in reply.content["metrics"]


class PlainClient(FedDetoxClientMixin, NumPyClient):
    def fit(self, parameters, config):
        return [p + 0.1 for p in parameters], 4, {}


def test_mixin_refuses_an_update_trained_outside_the_session():
    client = PlainClient().with_context(_ctx())
    with pytest.raises(ValueError, match="did not train through FedSafeSession"):
        client.fit([np.zeros(3, np.float32)], PRIVATE)
    assert client.fit([np.zeros(3, np.float32)], {})[1] == 4


def test_server_drops_replies_without_epsilon_when_privacy_is_on():
    cfg = FedSafeConfig.from_run_config(PRIVATE)
    strategy = FedDetox(FedAvg(), cfg)
    messages, _ = _round(strategy, [(_upd(0.1), {"num-examples": 5, EPSILON: 1.0}), (_upd(0.3), {"num-examples": 5})])
    with_dp, without = (m.metadata.dst_node_id for m in messages)  # FedAvg samples nodes in random order
    summary = strategy.history[1]
    assert summary.kept == [with_dp] and "fedsafe.dp.epsilon" in summary.dropped[without]

    legacy = FedDetoxLegacy(LegacyFedAvg(), cfg)
    legacy._global = {0: np.zeros(3, np.float32)}
    fitres = [FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.full(3, v, np.float32)]), 2, m)
              for v, m in ((0.1, {EPSILON: 1.0}), (0.2, {}))]
    legacy.aggregate_fit(1, [(type("P", (), {"node_id": i + 1})(), r) for i, r in enumerate(fitres)], [])
    assert legacy.history[1].kept == [1] and "fedsafe.dp.epsilon" in legacy.history[1].dropped[2]
