"""No local text leaves a client: every message a client sends in a simulated run is inspected.

The quickstart's ClientApp (sanitization on, SecAgg+ on so the extra stage messages are covered
too) runs in Flower's in-process simulation; the ServerApp records every reply the grid hands it,
which is everything the clients sent. The test fails if any prompt or response of any client's
local data, or any refusal template, appears in them as text or as bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedsafe_plugin import FedDetox, FedSafeConfig, build_tiny_lora_model, get_adapter_arrays
from fedsafe_plugin.demo_data import node_records
from fedsafe_plugin.sanitize import REFUSALS

from inprocess import run_app_inprocess

APP = Path(__file__).resolve().parent.parent / "examples" / "quickstart-feddetox"
CLIENTS, PAIRS = 2, 16


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

    run_app_inprocess(APP, CLIENTS, {"pairs-per-client": PAIRS, "local-steps": 2}, server_app=server)
    assert recorded, "the server received no message"
    assert any("fedsafe.sanitize.replaced" in text for text, _ in recorded), "sanitization counts never arrived"
    secrets = {r[k] for p in range(CLIENTS) for r in node_records({"partition-id": p, "num-partitions": CLIENTS}, PAIRS)
               for k in ("prompt", "chosen", "rejected")} | set(REFUSALS)
    for text, blob in recorded:
        for secret in secrets:
            assert secret not in text and secret.encode() not in blob, f"local text left a client: {secret[:40]!r}"
