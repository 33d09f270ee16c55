"""`FedDetox`: wraps any Message-API strategy (FedAvg, FedProx, FedAdam, ...) with fedsafe.

Like Flower's `DifferentialPrivacyServerSideFixedClipping`, it keeps the user's strategy and adds
to it: the fedsafe config goes out in every train message; every reply is screened (client error,
exhausted privacy budget, NaN/inf, key or shape mismatch, oversized update) and a bad one is
dropped with a logged reason naming the node; the round goes on while `min-replies` remain; the
clients' `fedsafe.*` metrics become a per-round summary. Secure aggregation and client-level DP
plug in here when configured.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsafe_plugin.config import ConfigError, FedSafeConfig
from fedsafe_plugin.client.session import is_exhausted, lacks_dp
from fedsafe_plugin.strategies.summary import RoundSummary
from fedsafe_plugin.validation import as_ndarrays, find_problem

log = logging.getLogger("flwr.fedsafe")
MIN_BITS_WITH_CLIENT_DP = 20

class FedDetox(Strategy):
    """Wrap `strategy` so its rounds are fedsafe rounds (see the module docstring)."""

    def __init__(
        self,
        strategy: Strategy,
        config: FedSafeConfig | None = None,
        *,
        arrayrecord_key: str = "arrays",
        weighted_by_key: str = "num-examples",
    ) -> None:
        self.config = config if config is not None else FedSafeConfig()
        self.arrayrecord_key = arrayrecord_key
        self.weighted_by_key = weighted_by_key
        self._secure = None
        secagg, client_dp = self.config.secagg.mode, self.config.client_dp.mode
        if secagg != "none" and client_dp == "server":
            raise ConfigError("fedsafe.client-dp.mode: 'server' clips each client's update, which secure aggregation hides; use 'client'")
        if secagg == "ckks" and client_dp != "none":
            raise ConfigError("fedsafe.client-dp.mode: the server cannot add noise to a CKKS-encrypted aggregate; use 'none'")
        if secagg == "secagg+" and client_dp != "none" and self.config.secagg.bits < MIN_BITS_WITH_CLIENT_DP:
            # Stochastic rounding lets one client move the decoded mean by up to about (r/L)*sqrt(d)
            # beyond its clipped C/n, which the noise does not cover; at >= 20 bits that is < 1e-6*sqrt(d).
            raise ConfigError(f"fedsafe.secagg.bits: client-level DP needs at least {MIN_BITS_WITH_CLIENT_DP} bits "
                              "(coarser quantisation adds influence the DP noise does not cover)")
        if secagg != "none":
            from fedsafe_plugin.privacy.secagg import check_inner_strategy, make_server_aggregator

            check_inner_strategy(strategy, secagg)
            self._secure = make_server_aggregator(self.config.secagg)
        if self.config.client_dp.mode != "none":
            from fedsafe_plugin.privacy.client_dp import wrap_client_dp

            strategy = wrap_client_dp(strategy, self.config.client_dp)
        self.strategy = strategy
        # Client-level DP sizes its noise for a plain mean of clipped updates (each client moves it
        # by at most C/n); num-examples weighting would let one client move it by up to C.
        self._equal_weights = self.config.client_dp.mode != "none"
        self.history: dict[int, RoundSummary] = {}
        self._global = ArrayRecord()
        self._grid: Grid | None = None

    @classmethod
    def from_run_config(cls, strategy: Strategy, run_config: Mapping[str, Any], **kwargs: Any) -> FedDetox:
        """Wrap `strategy` with the `fedsafe.*` keys of `context.run_config`."""
        return cls(strategy, FedSafeConfig.from_run_config(run_config), **kwargs)

    def __repr__(self) -> str:
        return f"FedDetox({self.strategy!r})"

    def summary(self) -> None:
        """Log the fedsafe settings, then the wrapped strategy's summary."""
        log.info("FedDetox: sanitize=%s privacy=%s client-dp=%s secagg=%s",
                 self.config.sanitize.enabled, self.config.privacy.enabled,
                 self.config.client_dp.mode, self.config.secagg.mode)
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's train messages, each carrying the fedsafe config."""
        self._global, self._grid = arrays, grid
        config = ConfigRecord({**config, **self.config.to_flat()})
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        if self._secure is not None:
            messages = self._secure.configure_train(server_round, messages, grid)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen replies, aggregate what is left (securely if configured), log the summary."""
        summary = RoundSummary(server_round)
        kept = self._screen(list(replies), summary)
        arrays, metrics = None, None
        if len(kept) < self.config.validate.min_replies:
            log.warning("fedsafe round %d: %d valid replies < min-replies %d; global model unchanged",
                        server_round, len(kept), self.config.validate.min_replies)
        elif self._secure is not None:
            arrays, metrics = self._aggregate_secure(server_round, kept, summary)
        else:
            if self._equal_weights:
                self._weigh_equally(kept)
            arrays, metrics = self.strategy.aggregate_train(server_round, kept)
        self.history[server_round] = summary
        log.info(summary.describe())
        combined = {**(dict(metrics) if metrics is not None else {}), **summary.as_metrics()}
        return arrays, MetricRecord(combined)

    def _weigh_equally(self, replies: list[Message]) -> None:
        """Give every reply weight 1 (see `_equal_weights`)."""
        for msg in replies:
            next(iter(msg.content.metric_records.values()))[self.weighted_by_key] = 1.0

    def _aggregate_secure(self, server_round: int, kept: list[Message], summary: RoundSummary) -> tuple[ArrayRecord | None, MetricRecord | None]:
        assert self._secure is not None and self._grid is not None
        # Clients mask their own weights, so equal weights are asked of them (weight key "").
        weight_key = "" if self._equal_weights else self.weighted_by_key
        result = self._secure.aggregate_train(server_round, kept, self._grid, self._global, weight_key)
        summary.extra.update(result.metrics)
        if result.arrays is None:
            log.warning("fedsafe round %d: secure aggregation failed (%s); global model unchanged", server_round, result.reason)
        if result.arrays is None or result.encrypted:
            return result.arrays, None
        # The wrapped strategy sees the secure mean as its replies, so server-side optimisers
        # (FedAdam, FedYogi, FedAvgM) still apply to it. Under client-level DP it is one equal-weight
        # reply per client in the sum: Flower's DP wrapper counts replies against the sampled
        # clients and checks equal weights before it adds noise and accounts the round.
        copies, weight = (round(result.total_weight), 1.0) if self._equal_weights else (1, result.total_weight)
        content = RecordDict({
            self.arrayrecord_key: result.arrays,
            "metrics": MetricRecord({self.weighted_by_key: weight}),
        })
        replies = [Message(content, dst_node_id=0, message_type="train") for _ in range(copies)]
        return self.strategy.aggregate_train(server_round, replies)

    def _screen(self, replies: list[Message], summary: RoundSummary) -> list[Message]:
        summary.received = len(replies)
        kept = []
        reference = as_ndarrays(self._global)
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                summary.dropped[node] = f"client error: {msg.error.reason}"
                continue
            exhausted = any(is_exhausted(m) for m in msg.content.metric_records.values())
            no_dp = lacks_dp({k: v for m in msg.content.metric_records.values() for k, v in m.items()}, self.config)
            for record in msg.content.metric_records.values():
                summary.collect(record)
            if exhausted:
                summary.exhausted.append(node)
                continue
            problem = no_dp or self._problem(msg, reference)
            if problem is not None:
                summary.dropped[node] = problem
                log.warning("fedsafe: dropping reply from node %d: %s", node, problem)
                continue
            summary.kept.append(node)
            kept.append(msg)
        return kept

    def _problem(self, msg: Message, reference: dict) -> str | None:
        content = msg.content
        if len(content.array_records) != 1 or len(content.metric_records) != 1:
            return "reply must hold exactly one ArrayRecord and one MetricRecord"
        weight = next(iter(content.metric_records.values())).get(self.weighted_by_key)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
            return f"metric {self.weighted_by_key!r} missing or not a finite non-negative number"
        if self._secure is not None:
            return None  # masked or encrypted: the client mod checked the plaintext before sending
        update = as_ndarrays(next(iter(content.array_records.values())))
        return find_problem(update, reference, self.config.validate.max_update_norm)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Evaluation is the wrapped strategy's."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Evaluation is the wrapped strategy's."""
        return self.strategy.aggregate_evaluate(server_round, replies)
