"""The demo's Flower apps, built on fedsafe's public API exactly as a user would write them.

ClientApp: `FedSafeSession` sanitizes the local pairs, trains the LoRA adapter with DPO (DP-SGD
when enabled) and replies; `fedsafe_mods()` (plus SecAgg+'s mod when on) guard the reply.
ServerApp: Flower's `FedAvg` wrapped by `FedDetox`; after every round the global adapter is
scored by the safety harness on the held-out suite, and a counting Grid measures the bytes of
every message that crosses the wire.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from fedsafe_plugin.config import FedSafeConfig
from fedsafe_plugin.demo.plan import Plan
from fedsafe_plugin.eval.realdata import FederationData

RoundHook = Callable[[dict[str, Any]], None]


@lru_cache(maxsize=2)
def _base(model: str, corpus: tuple[str, ...] | None) -> tuple[Any, Any]:
    from fedsafe_plugin.eval.models import load_causal_lm

    return load_causal_lm(model, corpus=list(corpus) if corpus is not None else None)


def fresh_lora_model(model: str, corpus: tuple[str, ...] | None, seed: int) -> tuple[Any, Any]:
    """A private copy of the (cached) base model with a LoRA adapter seeded by `seed`."""
    import torch

    from fedsafe_plugin.training.lora import add_lora

    base, tokenizer = _base(model, corpus)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return add_lora(copy.deepcopy(base)), tokenizer
    finally:
        torch.random.set_rng_state(state)


def quiet_library_warnings() -> None:
    """Hide third-party deprecation notices that would drown the demo's per-round progress."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
    warnings.filterwarnings("ignore", message=".*Optimal order is the largest alpha.*")


def message_bytes(messages: Iterable[Any]) -> int:
    """Serialized size of the messages' contents (what Flower puts on the wire for them)."""
    from flwr.common.serde import recorddict_to_proto

    return sum(recorddict_to_proto(m.content).ByteSize() for m in messages if m.has_content())


class CountingGrid:
    """A Grid that counts the bytes sent to (down) and received from (up) the clients."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.down = 0
        self.up = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
        messages = list(messages)
        self.down += message_bytes(messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:
        replies = list(self._grid.pull_messages(message_ids))
        self.up += message_bytes(replies)
        return replies

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:
        messages = list(messages)
        self.down += message_bytes(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.up += message_bytes(replies)
        return replies


def build_client_app(plan: Plan, fed: FederationData, corpus: list[str] | None, config: FedSafeConfig) -> Any:
    """The ClientApp: node `partition-id` trains on `fed.clients[partition-id]`."""
    from flwr.app import Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from fedsafe_plugin.client.mods import fedsafe_mods
    from fedsafe_plugin.client.session import FedSafeSession
    from fedsafe_plugin.training.data import encode_pairs, pad_id
    from fedsafe_plugin.training.lora import get_adapter_arrays, set_adapter_arrays

    key = tuple(corpus) if corpus is not None else None
    records = [[p.as_record() for p in c] for c in fed.clients]
    settings = plan.train_settings()
    mods = list(fedsafe_mods())
    if config.secagg.mode != "none":
        from fedsafe_plugin.privacy.secagg import secagg_mod

        mods = mods if secagg_mod in mods else [secagg_mod, *mods]
    app = ClientApp()

    @app.train(mods=mods)
    def train(msg: Message, context: Context) -> Message:
        import torch

        torch.set_num_threads(1)  # one core per simulated client (the Ray backend runs one per CPU)
        quiet_library_warnings()
        node = int(context.node_config["partition-id"])
        fs = FedSafeSession.from_message(msg, context)
        model, tokenizer = fresh_lora_model(plan.model, key, plan.seed)
        set_adapter_arrays(model, msg.content["arrays"])
        mine = fs.sanitize(records[node])
        server_round = int(msg.content["config"].get("server-round", 0))
        local = replace(settings, seed=plan.seed * 100_003 + node * 1_009 + server_round)
        metrics = fs.train_dpo(model, encode_pairs(tokenizer, mine, plan.max_length), local, pad_id(tokenizer))
        metrics["num-examples"] = len(mine)
        content = RecordDict({"arrays": get_adapter_arrays(model), "metrics": MetricRecord(metrics)})
        return Message(content, reply_to=msg)

    return app


def build_server_app(
    plan: Plan, fed: FederationData, corpus: list[str] | None, config: FedSafeConfig,
    sink: dict[str, Any], on_round: RoundHook,
) -> Any:
    """The ServerApp; fills `sink['rounds']` with one evaluation row per round (0 = before training)."""
    from flwr.app import ConfigRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedsafe_plugin.eval.harness import evaluate
    from fedsafe_plugin.strategies.feddetox import FedDetox
    from fedsafe_plugin.training.lora import get_adapter_arrays, set_adapter_arrays

    key = tuple(corpus) if corpus is not None else None
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        model, tokenizer = fresh_lora_model(plan.model, key, plan.seed)
        n = plan.clients
        strategy = FedDetox(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n),
            config,
        )
        counting = CountingGrid(grid)
        rows: list[dict[str, Any]] = sink.setdefault("rounds", [])
        started = time.perf_counter()

        def evaluate_fn(server_round: int, arrays: Any) -> MetricRecord:
            set_adapter_arrays(model, arrays)
            row = evaluate(model, tokenizer, fed.suite, max_length=max(plan.max_length, 256), progress=False)
            summary = strategy.history.get(server_round)
            metrics = summary.as_metrics() if summary is not None else {}
            row = {
                "round": server_round,
                **{k: row[k] for k in ("harmful_rate", "jailbreak_rate", "over_refusal_rate", "utility")},
                "margins": row["margins"],
                "epsilon": metrics.get("fedsafe.dp.epsilon-max"),
                "bytes_down": counting.down,
                "bytes_up": counting.up,
                "sanitize": {k.removeprefix("fedsafe.sanitize."): v for k, v in metrics.items() if k.startswith("fedsafe.sanitize.")},
                "replies_kept": metrics.get("fedsafe.kept"),
                "seconds": round(time.perf_counter() - started, 1),
            }
            rows.append(row)
            on_round(row)
            return MetricRecord({k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and v is not None})

        strategy.start(
            grid=counting, initial_arrays=get_adapter_arrays(model), num_rounds=plan.rounds,
            train_config=ConfigRecord({}), evaluate_fn=evaluate_fn,
        )

    return app
