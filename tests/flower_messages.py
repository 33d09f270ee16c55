"""Build real Flower Messages for unit tests: an instruction from the server, a client's reply."""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fedsafe_plugin.validation import to_array_record


def as_server() -> None:
    """Messages created now come from the SuperLink (as inside a ServerApp)."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


def train_instruction(node: int, arrays: dict[str, np.ndarray], config: dict | None = None) -> Message:
    """A train message to `node` carrying the global arrays and a config."""
    as_server()
    content = RecordDict({"arrays": to_array_record(arrays), "config": ConfigRecord(config or {})})
    return Message(content, dst_node_id=node, message_type="train")


def train_reply(instruction: Message, arrays: dict[str, np.ndarray] | None, metrics: dict) -> Message:
    """The client's reply to `instruction` (no ArrayRecord when `arrays` is None)."""
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = to_array_record(arrays)
    return Message(content, reply_to=instruction)
