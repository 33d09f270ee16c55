"""No local text leaves a client: every message a client sends in a simulated run is inspected.

The quickstart's ClientApp (sanitization on, SecAgg+ on so the extra stage messages are covered
too) runs in Flower's in-process simulation; the ServerApp records every reply the grid hands it,
which is everything the clients sent. The test fails if any prompt or response of any client's
local data, any refusal template, or any record's free-text `category` (as written or as a
metric-key slug), appears in them as text or as bytes. The ClientApp is the quickstart's own,
fed the quickstart's pairs with such a category added to each.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedsafe_plugin import FedDetox, FedSafeConfig, build_tiny_lora_model, fedsafe_evaluate_mods, fedsafe_mods, get_adapter_arrays
from fedsafe_plugin.demo_data import node_records
from fedsafe_plugin.sanitize import REFUSALS

from inprocess import load_component, run_app_inprocess

APP = Path(__file__).resolve().parent.parent / "examples" / "quickstart-feddetox"
CLIENTS, PAIRS = 2, 16
load_component(APP, "quickstart_feddetox.client_app:app")  # imports it with the app folder on sys.path
quickstart = sys.modules["quickstart_feddetox.client_app"]


def _category(partition: int, index: int) -> str:
    """A free-text category no audit may send: personal data, as a careless dataset might hold."""
    return f"Alice Smith {partition}-{index}, 42 Elm St, diagnosis HIV"


def _categorised_pairs(context: Context) -> list[dict]:
    """The quickstart's pairs for this node, each with a free-text `category`."""
    pairs = sys.modules["quickstart_feddetox.task"].load_local_pairs(context)
    return [dict(r, category=_category(int(context.node_config["partition-id"]), i)) for i, r in enumerate(pairs)]


categorised_app = ClientApp()
categorised_app.evaluate(mods=fedsafe_evaluate_mods())(quickstart.evaluate)


@categorised_app.train(mods=fedsafe_mods())
def train(msg: Message, context: Context) -> Message:
    """The quickstart's train, on its pairs with a free-text category each."""
    with patch.object(quickstart, "load_local_pairs", _categorised_pairs):
        return quickstart.train(msg, context)


class RecordingGrid(Grid):
    """A grid that snapshots every reply's payload as it reaches the ServerApp (before any strategy
    code can touch the message)."""

    def __init__(self, grid: Grid) -> None:
        self.grid, self.payloads = grid, []

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.payloads += [_payload(m) for m in replies]
        return replies

    def pull_messages(self, message_ids):
        replies = list(self.grid.pull_messages(message_ids))
        self.payloads += [_payload(m) for m in replies]
        return replies

    def push_messages(self, messages):
        return self.grid.push_messages(messages)

    def get_node_ids(self):
        return self.grid.get_node_ids()

    def create_message(self, *args, **kwargs):
        return self.grid.create_message(*args, **kwargs)

    def set_run(self, run):
        return self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run


def _payload(msg: Message) -> tuple[str, bytes]:
    """Everything a message carries, as text (config values, metric keys, errors) and raw bytes."""
    texts, blobs = [], []
    if msg.has_error():
        texts.append(str(msg.error.reason))
        return "\n".join(texts), b""
    content = msg.content
    for record in content.config_records.values():
        for key, value in record.items():
            values = value if isinstance(value, list) else [value]
            texts += [key] + [v for v in values if isinstance(v, str)]
            blobs += [v for v in values if isinstance(v, bytes)]
    for record in content.metric_records.values():
        texts += list(record.keys())
    for record in content.array_records.values():
        for key, array in record.items():
            texts.append(key)
            blobs.append(array.data)
    return "\n".join(texts), b"".join(blobs)


@pytest.mark.e2e
def test_no_local_text_in_any_outgoing_message():
    recorded: list[tuple[str, bytes]] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        grid = RecordingGrid(grid)
        config = FedSafeConfig.from_run_config({**context.run_config, "fedsafe.secagg.mode": "secagg+"})
        strategy = FedDetox(FedAvg(fraction_train=1.0, fraction_evaluate=1.0), config)
        strategy.start(grid=grid, initial_arrays=get_adapter_arrays(build_tiny_lora_model()[0]), num_rounds=2)
        recorded.extend(grid.payloads)
        assert all(strategy.history[r].kept for r in (1, 2)), strategy.history

    run_app_inprocess(APP, CLIENTS, {"pairs-per-client": PAIRS, "local-steps": 2}, server_app=server, client_app=categorised_app)
    assert recorded, "the server received no message"
    assert any("fedsafe.sanitize.replaced" in text for text, _ in recorded), "sanitization counts never arrived"
    categories = {_category(p, i) for p in range(CLIENTS) for i in range(PAIRS)}
    secrets = {r[k] for p in range(CLIENTS) for r in node_records({"partition-id": p, "num-partitions": CLIENTS}, PAIRS)
               for k in ("prompt", "chosen", "rejected")} | set(REFUSALS) | categories
    secrets |= {re.sub(r"[^a-z0-9]+", "_", c.lower()).strip("_") for c in categories}
    for text, blob in recorded:
        for secret in secrets:
            assert secret not in text and secret.encode() not in blob, f"local text left a client: {secret[:40]!r}"
    assert any("fedsafe.sanitize.unsafe.other" in text for text, _ in recorded), "category counts never arrived"
