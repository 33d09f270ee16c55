"""FedDetoxClientMixin wraps the user's fit/get_parameters; FedDetoxLegacy screens FitRes."""

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.client import NumPyClient
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.strategy import FedAvg

from fedsafe_plugin import ConfigError, FedDetoxClientMixin, FedDetoxLegacy, FedSafeConfig


class MyClient(FedDetoxClientMixin, NumPyClient):
    def __init__(self, delta):
        self.delta = delta
        self.seen_config = None

    def get_parameters(self, config):
        return [np.full(3, self.delta, np.float32)]

    def fit(self, parameters, config):
        self.seen_config = self.fedsafe.config
        self.fedsafe.metrics["fedsafe.sanitize.replace"] = 2.0
        return [p + self.delta for p in parameters], 4, {"loss": 0.1}


def _ctx():
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_fit_is_wrapped_config_read_metrics_added():
    client = MyClient(0.5).with_context(_ctx())
    params, n, metrics = client.fit([np.zeros(3, np.float32)], {"fedsafe.sanitize.action": "drop", "lr": 0.1})
    assert client.seen_config.sanitize.action == "drop"
    assert n == 4 and metrics == {"loss": 0.1, "fedsafe.sanitize.replace": 2.0}
    np.testing.assert_allclose(params[0], 0.5)


def test_nan_update_raises_and_bound_clips():
    with pytest.raises(ValueError, match="NaN or inf"):
        MyClient(np.nan).with_context(_ctx()).fit([np.zeros(3, np.float32)], {})
    params, _, _ = MyClient(10.0).with_context(_ctx()).fit([np.zeros(3, np.float32)], {"fedsafe.validate.max-update-norm": 1.0})
    assert np.linalg.norm(params[0]) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="NaN or inf"):
        MyClient(np.inf).get_parameters({})


def test_private_training_needs_a_bound_context():
    """Flower builds a new client every round: without the context the accountant would restart."""
    with pytest.raises(ValueError, match="DP-SGD needs the ClientApp context"):
        MyClient(0.1).fit([np.zeros(3, np.float32)], {"fedsafe.privacy.enabled": True})
    unbound = MyClient(0.1)  # without DP an unbound client still trains (only the sanitize cache is lost)
    assert unbound.fit([np.zeros(3, np.float32)], {})[1] == 4
    bound = MyClient(0.1)
    bound.context = _ctx()  # the `self.context` a client_fn sets, as in the examples
    assert bound._fedsafe_state(True) is bound.context.state


def test_bad_config_raises_config_error():
    with pytest.raises(ConfigError, match="fedsafe.privacy.delta"):
        MyClient(0.1).with_context(_ctx()).fit([np.zeros(3, np.float32)], {"fedsafe.privacy.delta": 2.0})


class _Proxy:
    def __init__(self, node_id):
        self.node_id = node_id


def _fitres(values, metrics):
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.asarray(values, np.float32)]), 2, metrics)


def test_legacy_wrapper_screens_and_summarises():
    strategy = FedDetoxLegacy(FedAvg(), FedSafeConfig())
    strategy._global = {0: np.zeros(3, np.float32)}
    results = [
        (_Proxy(1), _fitres([1, 1, 1], {"fedsafe.sanitize.replace": 1.0})),
        (_Proxy(2), _fitres([np.nan, 0, 0], {})),
        (_Proxy(3), _fitres([0, 0, 0], {"fedsafe.dp.exhausted": 1})),
    ]
    params, metrics = strategy.aggregate_fit(1, results, [])
    summary = strategy.history[1]
    assert summary.kept == [1] and 2 in summary.dropped and summary.exhausted == [3]
    assert metrics["fedsafe.sanitize.replace"] == 1.0


def test_legacy_wrapper_refuses_message_api_features():
    with pytest.raises(ConfigError, match="fedsafe.secagg.mode"):
        FedDetoxLegacy(FedAvg(), FedSafeConfig.from_run_config({"fedsafe.secagg.mode": "ckks"}))
