"""fedsafe_mod: bad config is an error reply; a bad update never leaves the device; norm bounding."""

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from fedsafe_plugin import FedSafeSession, fedsafe_mod
from fedsafe_plugin.validation import as_ndarrays, update_norm

from flower_messages import train_instruction, train_reply

GLOBAL = {"w.lora_A": np.zeros((2, 3), np.float32)}


def _ctx():
    return Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})


def _run(config, reply_arrays, metrics=None, exhaust=False):
    msg = train_instruction(5, GLOBAL, config)
    calls = []

    def app(m, ctx):
        calls.append(m)
        fs = FedSafeSession.from_message(m, ctx)
        fs.metrics["fedsafe.sanitize.replace"] = 2.0
        fs.exhausted = exhaust
        return train_reply(m, reply_arrays, metrics or {"num-examples": 3})

    return fedsafe_mod(msg, _ctx(), app), calls


def test_good_reply_passes_unchanged():
    reply, calls = _run({"fedsafe.sanitize.enabled": True}, {"w.lora_A": np.ones((2, 3), np.float32)})
    assert not reply.has_error() and len(calls) == 1
    np.testing.assert_array_equal(as_ndarrays(reply.content["arrays"])["w.lora_A"], np.ones((2, 3)))


def test_bad_config_is_an_error_reply_and_app_not_called():
    reply, calls = _run({"fedsafe.privacy.epsilon": -1.0}, GLOBAL)
    assert reply.has_error() and not calls
    assert "fedsafe.privacy.epsilon" in reply.error.reason


def test_nan_update_is_not_sent():
    reply, _ = _run({}, {"w.lora_A": np.full((2, 3), np.nan, np.float32)})
    assert reply.has_error() and "NaN or inf" in reply.error.reason
    assert not reply.has_content()


def test_extra_keys_are_not_sent():
    reply, _ = _run({}, {"w.lora_A": np.zeros((2, 3), np.float32), "base.weight": np.zeros(3, np.float32)})
    assert reply.has_error() and "keys differ" in reply.error.reason


def test_update_is_bounded_on_device():
    reply, _ = _run({"fedsafe.validate.max-update-norm": 0.5}, {"w.lora_A": np.full((2, 3), 2.0, np.float32)})
    assert update_norm(as_ndarrays(reply.content["arrays"]), GLOBAL) == pytest.approx(0.5, rel=1e-5)


def test_session_metrics_are_added():
    reply, _ = _run({}, GLOBAL)
    assert reply.content["metrics"]["fedsafe.sanitize.replace"] == 2.0


def test_exhausted_budget_sends_no_update():
    reply, _ = _run({}, {"w.lora_A": np.ones((2, 3), np.float32)}, exhaust=True)
    assert not reply.has_error() and not reply.content.array_records
    assert reply.content["metrics"]["fedsafe.sanitize.replace"] == 2.0


def test_session_requires_the_mod():
    msg = train_instruction(5, GLOBAL, {})
    with pytest.raises(RuntimeError, match="fedsafe_mods"):
        FedSafeSession.from_message(msg, _ctx())
