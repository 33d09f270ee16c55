"""An in-process Flower `Grid` that runs client functions behind `secagg_mod`, for tests and benchmarks.

Every message crosses Flower's protobuf wire format both ways (so what arrives is what a
SuperNode would see, and sizes are real wire bytes), each node keeps its own `Context` as the
SuperNode would, and hooks can drop nodes at a stage or alter messages in flight, which is how
the tests play dropouts and a malicious server. `received` keeps every reply the server got
(what the server-side code could ever touch), unless `keep_received` is off (benchmarks).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedsafe_plugin.privacy.secagg import wire as W
from fedsafe_plugin.privacy.secagg.client_mod import secagg_mod

App = Callable[[Message, Context], Message]


def _wire(msg: Message) -> tuple[Message, int]:
    blob = message_to_proto(msg).SerializeToString()
    proto = ProtoMessage()
    proto.ParseFromString(blob)
    return message_from_proto(proto), len(blob)


def stage_name(msg: Message) -> str:
    """The secagg stage a message belongs to ('plain' when it carries none)."""
    record = W.stage_of(msg)
    return str(record["stage"]) if record else "plain"


@dataclass
class LocalGrid(Grid):
    """Deliver messages to `app(node)` wrapped by `secagg_mod`; see the module docstring."""

    apps: dict[int, App]
    node_config: dict[int, dict[str, Any]] = field(default_factory=dict)
    drop: Callable[[str, int], bool] = lambda stage, node: False
    to_client: Callable[[Message], Message] = lambda msg: msg
    mods: list[Callable[..., Message]] = field(default_factory=lambda: [secagg_mod])
    keep_received: bool = True
    received: list[Message] = field(default_factory=list)
    sent_bytes: dict[tuple[str, int], int] = field(default_factory=dict)
    received_bytes: dict[tuple[str, int], int] = field(default_factory=dict)
    contexts: dict[int, Context] = field(init=False)
    _replies: dict[str, Message] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("_run_id", "_task_id", "_node_id"):  # this process plays the SuperLink
            if getattr(TaskIdentity, name) is None:
                setattr(TaskIdentity, name, 1 if name != "_node_id" else 0)
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config=self.node_config.get(n, {}), state=RecordDict(), run_config={})
            for n in self.apps
        }

    def set_run(self, run: Any) -> None:
        """Unused: one implicit run."""

    @property
    def run(self) -> Any:
        """Unused: one implicit run."""
        return None

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Message:
        """A new instruction message."""
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        """All nodes."""
        return list(self.apps)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run each message through its node's mods and app now; dropped nodes do not answer."""
        ids = []
        for msg in messages:
            node, stage = msg.metadata.dst_node_id, stage_name(msg)
            msg_id = secrets.token_hex(8)
            msg.metadata.__dict__["_message_id"] = msg_id
            ids.append(msg_id)
            if node not in self.apps or self.drop(stage, node):
                continue
            delivered, size = _wire(self.to_client(msg))
            self.sent_bytes[(stage, node)] = self.sent_bytes.get((stage, node), 0) + size
            back, size = _wire(self._call(delivered, node))
            self.received_bytes[(stage, node)] = self.received_bytes.get((stage, node), 0) + size
            if self.keep_received:
                self.received.append(back)
            self._replies[msg_id] = back
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies that arrived for these message ids (each handed out once)."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull: in-process delivery answers at once."""
        return list(self.pull_messages(self.push_messages(messages)))

    def _call(self, msg: Message, node: int) -> Message:
        handler: Callable[[Message, Context], Message] = self.apps[node]
        for mod in reversed(self.mods):
            handler = (lambda m, c, _mod=mod, _next=handler: _mod(m, c, _next))
        return handler(msg, self.contexts[node])


def fixed_update_app(update: dict[str, np.ndarray], weight: float, key: str = "arrays") -> App:
    """A ClientApp train function whose local training adds `update` to the global arrays."""

    def app(msg: Message, context: Context) -> Message:
        received = msg.content.array_records[key]
        new = {k: Array(received[k].numpy() + update[k]) for k in received}
        content = RecordDict({key: ArrayRecord(new), "metrics": MetricRecord({"num-examples": weight})})
        return Message(content, reply_to=msg)

    return app


def run_round(aggregator: Any, grid: LocalGrid, global_arrays: ArrayRecord, config: dict[str, Any],
              server_round: int = 1, key: str = "arrays") -> Any:
    """One train round as the FedDetox wrapper drives it; returns the aggregator's SecureResult.

    Like Flower's FedAvg, all train messages share one RecordDict.
    """
    content = RecordDict({key: global_arrays, "config": ConfigRecord(config)})
    messages = [Message(content, dst_node_id=n, message_type="train", group_id=str(server_round)) for n in grid.get_node_ids()]
    replies = grid.send_and_receive(aggregator.configure_train(server_round, messages, grid))
    kept = [r for r in replies if not r.has_error()]
    return aggregator.aggregate_train(server_round, kept, grid, global_arrays, "num-examples")
