"""`FedDetoxLegacy`: the fedsafe wrapper for `flwr.server.strategy.Strategy` (NumPyClient apps).

The legacy and Message-API wire formats do not interoperate, so NumPyClient apps get their own
wrapper with the same behaviour: fedsafe config into every FitIns, every FitRes screened and a bad
one dropped with a logged reason, `fedsafe.*` metrics summarised per round. Secure aggregation and
client-level DP are Message-API features: asking for them here is a ConfigError.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.common import FitIns, FitRes, Parameters, Scalar, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedsafe_plugin.client.session import is_exhausted, lacks_dp
from fedsafe_plugin.config import ConfigError, FedSafeConfig
from fedsafe_plugin.strategies.summary import RoundSummary
from fedsafe_plugin.validation import find_problem

log = logging.getLogger("flwr.fedsafe")


class FedDetoxLegacy(Strategy):
    """Wrap a legacy strategy (e.g. `flwr.server.strategy.FedAvg`) with fedsafe checks and config."""

    def __init__(self, strategy: Strategy, config: FedSafeConfig | None = None) -> None:
        self.config = config if config is not None else FedSafeConfig()
        if self.config.secagg.mode != "none":
            raise ConfigError("fedsafe.secagg.mode: secure aggregation needs the Message API wrapper FedDetox")
        if self.config.client_dp.mode != "none":
            raise ConfigError("fedsafe.client-dp.mode: for legacy apps use Flower's DifferentialPrivacy* wrappers")
        self.strategy = strategy
        self.history: dict[int, RoundSummary] = {}
        self._global: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"FedDetoxLegacy({self.strategy!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The wrapped strategy's initial parameters."""
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        """The wrapped strategy's fit instructions, each config extended with the fedsafe keys."""
        self._global = dict(enumerate(parameters_to_ndarrays(parameters)))
        instructions = self.strategy.configure_fit(server_round, parameters, client_manager)
        for _, fit_ins in instructions:
            fit_ins.config.update(self.config.to_flat())
        return instructions

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Screen results, aggregate the valid ones with the wrapped strategy, log the summary."""
        summary = RoundSummary(server_round, received=len(results) + len(failures))
        for i, failure in enumerate(failures):
            summary.dropped[-1 - i] = f"client failure: {failure!r}"
        kept = []
        for proxy, res in results:
            node = int(proxy.node_id)
            exhausted = is_exhausted(res.metrics)
            no_dp = lacks_dp(res.metrics, self.config)
            summary.collect(res.metrics)
            if exhausted:
                summary.exhausted.append(node)
                continue
            update = dict(enumerate(parameters_to_ndarrays(res.parameters)))
            problem = no_dp or find_problem(update, self._global, self.config.validate.max_update_norm)
            if problem is not None:
                summary.dropped[node] = problem
                log.warning("fedsafe: dropping reply from node %d: %s", node, problem)
                continue
            summary.kept.append(node)
            kept.append((proxy, res))
        self.history[server_round] = summary
        log.info(summary.describe())
        if len(kept) < self.config.validate.min_replies:
            log.warning("fedsafe round %d: %d valid replies < min-replies; global model unchanged", server_round, len(kept))
            return None, summary.as_metrics()
        parameters, metrics = self.strategy.aggregate_fit(server_round, kept, failures)
        return parameters, {**metrics, **summary.as_metrics()}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        """Evaluation is the wrapped strategy's."""
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[float | None, dict[str, Scalar]]:
        """Evaluation is the wrapped strategy's."""
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """Server-side evaluation is the wrapped strategy's."""
        return self.strategy.evaluate(server_round, parameters)
