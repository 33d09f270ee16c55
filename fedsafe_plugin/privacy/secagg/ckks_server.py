"""CKKS server: tags train messages with the key id and adds the clients' ciphertexts.

It loads only the public context (a secret one is refused), so it can add but never decrypt:
the aggregate it returns, and thus every later global model, stays encrypted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message

from fedsafe_plugin.config import SecAggConfig
from fedsafe_plugin.privacy.secagg import ckks as C
from fedsafe_plugin.privacy.secagg import wire as W
from fedsafe_plugin.privacy.secagg.primitives import SecAggError
from fedsafe_plugin.privacy.secagg.server import SecureResult

log = logging.getLogger("flwr.fedsafe")


class CKKSServer:
    """Server half of CKKS aggregation (public context only)."""

    def __init__(self, config: SecAggConfig, weighted_by_key: str = "num-examples") -> None:
        self.config = config
        self.keys = C.load(config.ckks_context, "public")
        self.weighted_by_key = weighted_by_key

    def configure_train(self, server_round: int, messages: list[Message], grid: Any) -> list[Message]:
        """Add the key id, weight key and client count to each train message (no extra stage)."""
        record = ConfigRecord({"stage": "ckks", "key-id": self.keys.key_id, "clients": len(messages),
                               "weight-key": self.weighted_by_key})
        return [W.with_record(msg, record) for msg in messages]

    def aggregate_train(self, server_round: int, replies: Iterable[Message], grid: Any,
                        global_arrays: ArrayRecord, weighted_by_key: str) -> SecureResult:
        """Sum of n_k * w_k as ciphertexts plus the total weight; no plaintext is ever formed."""
        layout = C.layout_of(global_arrays)
        total, headers, sizes = None, [], []
        for reply in replies:
            (arrays,) = reply.content.array_records.values()
            (metrics,) = reply.content.metric_records.values()
            node = reply.metadata.src_node_id
            if not C.is_encrypted(arrays):
                log.warning("ckks round %d: node %d sent a plaintext update; ignored", server_round, node)
                continue
            try:  # one bad ciphertext costs only its sender's update, never the round
                header, vectors = C.open_update(self.keys, arrays, layout)
                if header["weight"] != float(metrics[weighted_by_key]):
                    raise SecAggError(f"its weight differs from its {weighted_by_key!r}")
            except SecAggError as exc:
                log.warning("ckks round %d: node %d's ciphertext ignored: %s", server_round, node, exc)
                continue
            total = C.add_to(total, vectors)
            headers.append(header)
            sizes.append(W.payload_bytes_of(arrays))
        if total is None:
            reason = "no usable encrypted update"
            log.error("ckks round %d failed: %s", server_round, reason)
            return SecureResult(None, 0.0, {"fedsafe.secagg.failed": 1.0}, encrypted=True, reason=reason)
        weight = sum(h["weight"] for h in headers)
        if weight <= 0:
            return SecureResult(None, 0.0, {"fedsafe.secagg.failed": 1.0}, encrypted=True, reason="total weight is 0")
        total = C.sum_record(self.keys, total, headers, layout)
        metrics = {"fedsafe.secagg.survivors": float(len(headers)), "fedsafe.secagg.bytes-up-per-client": sum(sizes) / len(sizes)}
        return SecureResult(total, weight, metrics, encrypted=True)
