"""Client-level DP with Flower's own fixed-clipping wrappers, mod and `RdpAccountant`.

Nothing here re-implements Flower: `wrap_client_dp` picks Flower's server- or client-side wrapper
and (optionally) its accountant from the `fedsafe.client-dp.*` settings; `client_dp_mod` runs
Flower's `fixedclipping_mod` only when the server asked for client-side clipping, and lets a
budget-exhausted reply (no arrays) through instead of turning it into an error.

What Flower's accountant covers, and what it does not (read from flwr 1.41's source):
- It accounts the Gaussian noise added to the aggregated model update, per released round, with
  RDP and *no amplification by client sampling* (the only mode its fixed-clipping wrappers accept),
  so its epsilon is conservative for sampled clients.
- It requires `FedAvg.aggregate_train` (plain FedAvg or a subclass that does not override it) with
  equal client weights, and every sampled client replying (a missing reply aborts that round's
  aggregation; a dropped budget-exhausted client therefore skips the round).
- Not covered: training/evaluation metrics (e.g. `train-loss`, `num-examples`) sent in the clear,
  evaluation rounds, server-side optimisers' state, and the sample-level guarantee (that one is
  fedsafe's Opacus ledger). Without the accountant, noise is scaled for `num_sampled_clients`
  even when fewer replies arrive, which weakens the nominal guarantee.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedsafe_plugin.config import ClientDPConfig


def make_accountant(cfg: ClientDPConfig) -> Any:
    """Flower's `RdpAccountant` for the wrappers (no amplification, add/remove-one neighbours)."""
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    return RdpAccountant(
        PrivacyConfig(
            target_delta=cfg.delta,
            population_size=cfg.num_sampled_clients,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=cfg.max_epsilon,
        )
    )


def wrap_client_dp(strategy: Any, cfg: ClientDPConfig) -> Any:
    """Wrap `strategy` in Flower's fixed-clipping DP wrapper for `cfg.mode` ('none' returns it as is)."""
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
    )

    wrappers = {"server": DifferentialPrivacyServerSideFixedClipping, "client": DifferentialPrivacyClientSideFixedClipping}
    if cfg.mode == "none":
        return strategy
    if cfg.mode not in wrappers:
        raise ValueError(f"fedsafe.client-dp.mode: {cfg.mode!r} is not one of none, server, client")
    accountant = make_accountant(cfg) if cfg.accounting else None
    return wrappers[cfg.mode](
        strategy, cfg.noise_multiplier, cfg.clipping_norm, cfg.num_sampled_clients, accountant=accountant
    )


def client_dp_mod(msg: Any, context: Any, call_next: Callable[[Any, Any], Any]) -> Any:
    """Flower's `fixedclipping_mod` when the train config asks for client-side clipping, else a pass-through."""
    from flwr.clientapp.mod import fixedclipping_mod

    from fedsafe_plugin.client.session import config_from_message

    if config_from_message(msg).client_dp.mode != "client":
        return call_next(msg, context)
    replies: list[Any] = []

    def inner(m: Any, c: Any) -> Any:
        replies.append(call_next(m, c))
        return replies[-1]

    out = fixedclipping_mod(msg, context, inner)
    if replies and not replies[0].has_error() and not replies[0].content.array_records:
        return replies[0]  # no update to clip (privacy budget exhausted): reply as the app did
    return out
