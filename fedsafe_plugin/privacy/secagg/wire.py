"""What travels between the SecAgg+/CKKS server and client code: record names and stage fields.

Stage messages are `train` messages (so they reach the train mods) carrying one ConfigRecord
named `fedsafe.secagg`; node ids travel as decimal strings (Flower node ids are uint64).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

RECORD = "fedsafe.secagg"
MASKED = "fedsafe.secagg.masked"
STATE = "fedsafe.secagg.state"
STASH = "fedsafe.secagg.update"
STASH_METRICS = "fedsafe.secagg.metrics"

ADVERTISE, SHARE_KEYS, TRAIN, MASK, CONFIRM, UNMASK = "advertise", "share-keys", "train", "mask", "confirm", "unmask"
STAGES = (ADVERTISE, SHARE_KEYS, TRAIN, MASK, CONFIRM, UNMASK)


def ids_out(nodes: Iterable[int]) -> list[str]:
    """Node ids for a ConfigRecord."""
    return [str(n) for n in nodes]


def ids_in(values: Any) -> list[int]:
    """Node ids from a ConfigRecord list (empty lists come back as None or [])."""
    return [int(v) for v in (values or [])]


def stage_of(msg: Any) -> dict[str, Any] | None:
    """The `fedsafe.secagg` record of a message as a dict, or None."""
    records = msg.content.config_records
    return dict(records[RECORD]) if RECORD in records else None


def with_record(msg: Any, record: Any) -> Any:
    """A copy of an instruction message with the `fedsafe.secagg` record added.

    Strategies such as FedAvg give all train messages one shared RecordDict, so adding a
    per-node record in place would overwrite every other node's copy.
    """
    from flwr.app import Message, RecordDict

    content = RecordDict({**dict(msg.content.items()), RECORD: record})
    meta = msg.metadata
    return Message(content, dst_node_id=meta.dst_node_id, message_type=meta.message_type,
                   group_id=meta.group_id, ttl=meta.ttl)


def flat_keys(record: Any) -> list[str]:
    """The order in which both sides flatten an ArrayRecord (sorted keys: order-proof)."""
    return sorted(record.keys())


def flatten(arrays: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """Concatenate arrays (in `keys` order) into one float64 vector."""
    if not keys:
        return np.zeros(0)
    return np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k in keys])


def unflatten(vector: np.ndarray, like: dict[str, np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    """Split a flat vector back into arrays shaped and typed like `like`."""
    out, start = {}, 0
    for k in keys:
        ref = like[k]
        out[k] = vector[start : start + ref.size].reshape(ref.shape).astype(ref.dtype)
        start += ref.size
    return out


def payload_bytes_of(record: Any) -> int:
    """Bytes of array data in one ArrayRecord."""
    return sum(len(a.data) for a in record.values())


def payload_bytes(content: Any) -> int:
    """Bytes of array data plus bytes/str config values in a RecordDict (wire size, no framing)."""
    total = sum(payload_bytes_of(r) for r in content.array_records.values())
    for record in content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            total += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in items)
    for record in content.metric_records.values():
        total += 8 * len(record)
    return total
