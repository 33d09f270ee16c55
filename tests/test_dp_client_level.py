"""Client-level DP: Flower's own wrappers, accountant and clipping mod, driven by fedsafe config."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

from fedsafe_plugin.config import ClientDPConfig, FedSafeConfig
from fedsafe_plugin.privacy.client_dp import client_dp_mod, wrap_client_dp
from flower_messages import train_instruction, train_reply


def _cfg(mode: str, **kw) -> ClientDPConfig:
    return ClientDPConfig(mode=mode, noise_multiplier=1.2, clipping_norm=0.5, num_sampled_clients=3, **kw)


@pytest.mark.parametrize(("mode", "cls"), [("server", DifferentialPrivacyServerSideFixedClipping),
                                           ("client", DifferentialPrivacyClientSideFixedClipping)])
def test_wrap_uses_flowers_wrapper_with_config(mode, cls):
    inner = FedAvg()
    wrapped = wrap_client_dp(inner, _cfg(mode))
    assert type(wrapped) is cls and wrapped.strategy is inner
    assert (wrapped.noise_multiplier, wrapped.clipping_norm, wrapped.num_sampled_clients) == (1.2, 0.5, 3)
    assert wrapped.accountant is None
    assert wrap_client_dp(inner, _cfg("none")) is inner


def test_accountant_is_flowers_rdp_and_matches_dp_accounting():
    from dp_accounting import dp_event, rdp

    wrapped = wrap_client_dp(FedAvg(), _cfg("server", accounting=True, delta=1e-4, max_epsilon=5.0))
    acc = wrapped.accountant
    event = GaussianPrivacyEvent(noise_multiplier=1.2, sample_size=3, population_size=3)
    acc.compose(event, count=4)
    direct = rdp.RdpAccountant()
    direct.compose(dp_event.GaussianDpEvent(1.2), 4)  # no amplification: plain Gaussian per round
    assert acc.get_epsilon(1e-4) == pytest.approx(direct.get_epsilon(1e-4), rel=1e-9)
    assert acc.would_exceed(event, count=100)  # the cap stops a run before it overspends


def test_accounting_refuses_non_fedavg_aggregation():
    from flwr.serverapp.strategy import FedMedian

    with pytest.raises(ValueError, match="FedAvg"):
        wrap_client_dp(FedMedian(), _cfg("server", accounting=True))


def _instruction(mode: str):
    config = {**FedSafeConfig(client_dp=_cfg(mode)).to_flat(), KEY_CLIPPING_NORM: 0.5}
    return train_instruction(1, {"w": np.zeros(4, dtype=np.float32)}, config)


def test_client_mod_clips_only_when_asked():
    big = {"w": np.full(4, 3.0, dtype=np.float32)}
    for mode, expected_norm in [("client", 0.5), ("server", 6.0)]:
        msg = _instruction(mode)
        reply = client_dp_mod(msg, Context(1, 1, {}, RecordDict(), {}), lambda m, c: train_reply(m, big, {"num-examples": 1}))
        assert not reply.has_error()
        w = reply.content["arrays"].to_numpy_ndarrays()[0]
        assert np.linalg.norm(w) == pytest.approx(expected_norm, rel=1e-5)


def test_client_mod_lets_exhausted_reply_through():
    msg = _instruction("client")
    exhausted = {"num-examples": 0, "fedsafe.dp.exhausted": 1}
    reply = client_dp_mod(msg, Context(1, 1, {}, RecordDict(), {}), lambda m, c: train_reply(m, None, exhausted))
    assert not reply.has_error() and not reply.content.array_records
    assert reply.content["metrics"]["fedsafe.dp.exhausted"] == 1
