"""Secure aggregation of LoRA adapters: SecAgg+ (pairwise masks) or CKKS (TenSEAL).

Server: `make_server_aggregator(config.secagg)` gives an object with
`configure_train(round, messages, grid) -> messages` and
`aggregate_train(round, replies, grid, global_arrays, weighted_by_key) -> SecureResult`.
Client: `secagg_mod`, outermost in `@app.train(mods=[secagg_mod, ...])`.
"""

from __future__ import annotations

from typing import Any

from fedsafe_plugin.config import SecAggConfig
from fedsafe_plugin.privacy.secagg.client_mod import secagg_mod
from fedsafe_plugin.privacy.secagg.primitives import SecAggError
from fedsafe_plugin.privacy.secagg.server import SecAggPlusServer, SecureAggregator, SecureResult

# Strategies that must see individual updates; the secure aggregate hides them.
_NEEDS_INDIVIDUAL_UPDATES = ("Krum", "MultiKrum", "Bulyan", "FedMedian", "FedTrimmedAvg",
                             "DifferentialPrivacyServerSideFixedClipping",
                             "DifferentialPrivacyServerSideAdaptiveClipping")


def check_inner_strategy(strategy: Any, mode: str = "secagg+") -> None:
    """Raise ValueError if `strategy` cannot run on the secure aggregate of `mode`.

    Robust/median rules need individual updates, which both modes hide. In `ckks` mode the
    aggregate stays encrypted and the wrapped strategy's own aggregation never runs, so only
    FedAvg's (FedAvg, FedProx) is allowed: a server-side optimiser would be skipped without a word.
    """
    from flwr.serverapp.strategy import FedAvg

    names = {cls.__name__ for cls in type(strategy).__mro__}
    clash = sorted(names & set(_NEEDS_INDIVIDUAL_UPDATES))
    if clash:
        raise ValueError(
            f"{clash[0]} needs each client's individual update, but secure aggregation shows the server "
            "only the sum; use FedAvg/FedProx/FedAdam/FedYogi/FedAdagrad/FedAvgM, client-side norm bounding "
            "(fedsafe.validate.max-update-norm) and client-side DP clipping instead"
        )
    if mode == "ckks" and not (isinstance(strategy, FedAvg) and type(strategy).aggregate_train is FedAvg.aggregate_train):
        raise ValueError(
            f"{type(strategy).__name__} aggregates in its own way, but in ckks mode the server only adds "
            "ciphertexts and never sees the mean; use FedAvg or FedProx, or secagg+ for server-side optimisers"
        )


def decrypt_global(arrays: Any, secret_context: str) -> dict[str, Any]:
    """The plaintext of an encrypted CKKS global model (e.g. `Result.arrays`), for a key holder."""
    from fedsafe_plugin.privacy.secagg import ckks

    return ckks.decrypt(ckks.load(secret_context, "secret"), arrays)


def make_server_aggregator(config: SecAggConfig) -> SecureAggregator | None:
    """The server half for `config.mode` (None when secure aggregation is off)."""
    if config.mode == "none":
        return None
    if config.mode == "secagg+":
        return SecAggPlusServer(config)
    from fedsafe_plugin.privacy.secagg.ckks_server import CKKSServer

    return CKKSServer(config)


__all__ = ["SecAggError", "SecureAggregator", "SecureResult", "check_inner_strategy", "decrypt_global", "make_server_aggregator", "secagg_mod"]
