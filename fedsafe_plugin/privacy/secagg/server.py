"""SecAgg+ server: drives the extra stages through the grid and unmasks only the sum.

`configure_train` runs advertise and share-keys before training and routes the sealed shares
inside the train messages; `aggregate_train` runs mask, confirm and unmask after training and returns the
weighted mean of the survivors' updates added to the global arrays. Any failed stage (too few
replies before the timeout, a client refusing, a share set that does not reconstruct) ends the
round cleanly: `arrays=None` and a logged reason, never a hang.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedsafe_plugin.config import SecAggConfig
from fedsafe_plugin.privacy.secagg import primitives as P
from fedsafe_plugin.privacy.secagg import wire as W
from fedsafe_plugin.privacy.secagg.client import mask_label
from fedsafe_plugin.privacy.secagg.graph import Plan, graph_seed, neighbours, plan
from fedsafe_plugin.privacy.secagg.quantize import decode, error_bound

log = logging.getLogger("flwr.fedsafe")


@dataclass
class SecureResult:
    """What a secure aggregation round produced (`arrays=None`: the round failed, see `reason`)."""

    arrays: ArrayRecord | None
    total_weight: float
    metrics: dict[str, float] = field(default_factory=dict)
    encrypted: bool = False
    reason: str = ""


class SecureAggregator(Protocol):
    """What the FedDetox wrapper calls: `SecAggPlusServer` or `CKKSServer`."""

    def configure_train(self, server_round: int, messages: list[Message], grid: Any) -> list[Message]:
        """Extra stages before training; returns the train messages to send."""

    def aggregate_train(self, server_round: int, replies: Iterable[Message], grid: Any,
                        global_arrays: ArrayRecord, weighted_by_key: str) -> SecureResult:
        """Extra stages after training; returns the secure aggregate."""


@dataclass
class _Round:
    session: bytes
    plan: Plan
    keys: dict[int, tuple[bytes, bytes]]
    graph: dict[int, list[int]]
    commitments: dict[int, bytes]
    sharers: list[int]
    bytes_up: dict[int, int]
    bytes_down: dict[int, int]
    sealed: dict[int, tuple[list[str], list[bytes]]] = field(default_factory=dict)


class _Failed(Exception):
    """A stage could not complete; the message is the logged reason."""


# A client (faulty or malicious) can send records of the wrong shape; that fails the round, not the app.
_MALFORMED = (_Failed, KeyError, ValueError, TypeError)


class SecAggPlusServer:
    """Server half of SecAgg+ (Bell et al. 2020) on the Message API; see the module docstring."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self._rounds: dict[int, _Round] = {}
        self._failures: dict[int, str] = {}

    # -- stage plumbing -------------------------------------------------------------------
    def _exchange(self, grid: Any, server_round: int, stage: str, payloads: dict[int, RecordDict], state: _Round | None) -> dict[int, Message]:
        """Send one stage to each node, wait at most `timeout`; log refusals; return OK replies."""
        messages = [
            Message(content, dst_node_id=node, message_type="train", group_id=str(server_round), ttl=self.config.timeout)
            for node, content in payloads.items()
        ]
        replies = grid.send_and_receive(messages, timeout=self.config.timeout)
        ok: dict[int, Message] = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if node not in payloads:
                continue
            if reply.has_error():
                log.error("secagg round %d, stage %s: node %d refused: %s", server_round, stage, node, reply.error.reason)
                if stage in (W.CONFIRM, W.UNMASK):
                    raise _Failed(f"node {node} refused to unmask: {reply.error.reason}")
                continue
            record = W.stage_of(reply)
            if record is None or record.get("stage") != stage:
                log.warning("secagg round %d: node %d sent no %s reply", server_round, node, stage)
                continue
            ok[node] = reply
        if state is not None:
            for node, content in payloads.items():
                state.bytes_down[node] = state.bytes_down.get(node, 0) + W.payload_bytes(content)
            for node, reply in ok.items():
                state.bytes_up[node] = state.bytes_up.get(node, 0) + W.payload_bytes(reply.content)
        return ok

    def _request(self, stage: str, session: bytes, **fields: Any) -> RecordDict:
        return RecordDict({W.RECORD: ConfigRecord({"stage": stage, "session": session, **fields})})

    def _fail(self, server_round: int, reason: str) -> None:
        self._failures[server_round] = reason
        self._rounds.pop(server_round, None)
        log.error("secagg round %d failed: %s", server_round, reason)

    # -- before training ------------------------------------------------------------------
    def configure_train(self, server_round: int, messages: list[Message], grid: Any) -> list[Message]:
        """Run advertise + share-keys, then return the train messages (with shares) of the sharers."""
        # Forget rounds the wrapper never aggregated (e.g. too few valid replies).
        self._rounds = {r: s for r, s in self._rounds.items() if r > server_round}
        self._failures = {r: s for r, s in self._failures.items() if r > server_round}
        try:
            state = self._setup(server_round, [m.metadata.dst_node_id for m in messages], grid)
        except _MALFORMED as exc:
            self._fail(server_round, str(exc) if isinstance(exc, _Failed) else f"malformed stage reply ({type(exc).__name__}: {exc})")
            return []
        self._rounds[server_round] = state
        inbox: dict[int, tuple[list[str], list[bytes]]] = {n: ([], []) for n in state.sharers}
        for src, (to, sealed) in state.sealed.items():
            for dst, blob in zip(to, sealed, strict=True):
                if int(dst) in inbox:
                    inbox[int(dst)][0].append(str(src))
                    inbox[int(dst)][1].append(blob)
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node not in inbox:
                continue
            record = ConfigRecord({"stage": W.TRAIN, "session": state.session, "nodes": W.ids_out(state.sharers),
                                   "from": inbox[node][0], "sealed": inbox[node][1]})
            state.bytes_down[node] = state.bytes_down.get(node, 0) + W.payload_bytes(RecordDict({W.RECORD: record}))
            out.append(W.with_record(msg, record))
        state.sealed = {}
        return out

    def _setup(self, server_round: int, nodes: list[int], grid: Any) -> _Round:
        cfg = self.config
        rules = plan(len(nodes), cfg.neighbours, cfg.min_survivors)
        session = os.urandom(16)
        state = _Round(session, rules, {}, {}, {}, [], {}, {})
        ads = self._exchange(grid, server_round, W.ADVERTISE, {
            n: self._request(W.ADVERTISE, session, nodes=W.ids_out(nodes), neighbours=cfg.neighbours,
                             **{"min-survivors": cfg.min_survivors, "bits": cfg.bits, "clip-range": cfg.clip_range})
            for n in nodes}, state)
        if len(ads) < rules.min_survivors:
            raise _Failed(f"advertise: {len(ads)} of {len(nodes)} clients answered, need t={rules.min_survivors}")
        advertised = sorted(ads)
        state.plan = plan(len(advertised), cfg.neighbours, cfg.min_survivors)
        state.keys = {n: (bytes(W.stage_of(ads[n])["pk-c"]), bytes(W.stage_of(ads[n])["pk-s"])) for n in advertised}
        state.graph = neighbours(advertised, state.plan.k, graph_seed(session, state.keys))
        pk_c = [state.keys[n][0] for n in advertised]
        pk_s = [state.keys[n][1] for n in advertised]
        shared = self._exchange(grid, server_round, W.SHARE_KEYS, {
            n: self._request(W.SHARE_KEYS, session, nodes=W.ids_out(advertised), **{"pk-c": pk_c, "pk-s": pk_s})
            for n in advertised}, state)
        if len(shared) < state.plan.min_survivors:
            raise _Failed(f"share-keys: {len(shared)} of {len(advertised)} clients answered, need t={state.plan.min_survivors}")
        state.sharers = sorted(shared)
        state.commitments = {n: bytes(W.stage_of(shared[n])["commitment"]) for n in state.sharers}
        state.sealed = {n: (W.stage_of(shared[n]).get("to") or [], W.stage_of(shared[n]).get("sealed") or [])
                        for n in state.sharers}
        return state

    # -- after training -------------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message], grid: Any,
                        global_arrays: ArrayRecord, weighted_by_key: str) -> SecureResult:
        """Mask + unmask stages; the new global arrays are global + weighted mean update."""
        state = self._rounds.pop(server_round, None)
        if state is None:
            reason = self._failures.pop(server_round, "no SecAgg+ setup ran for this round")
            return SecureResult(None, 0.0, {"fedsafe.secagg.failed": 1.0}, reason=reason)
        try:
            return self._unmask_sum(server_round, list(replies), grid, global_arrays, weighted_by_key, state)
        except _MALFORMED as exc:
            reason = str(exc) if isinstance(exc, _Failed) else f"malformed stage reply ({type(exc).__name__}: {exc})"
            log.error("secagg round %d failed: %s", server_round, reason)
            return SecureResult(None, 0.0, {"fedsafe.secagg.failed": 1.0}, reason=reason)

    def _unmask_sum(self, server_round: int, replies: list[Message], grid: Any, global_arrays: ArrayRecord,
                    weighted_by_key: str, state: _Round) -> SecureResult:
        rules, session = state.plan, state.session
        weights: dict[int, float] = {}
        for reply in replies:
            node, record = reply.metadata.src_node_id, W.stage_of(reply)
            if node not in state.sharers or record is None or record.get("session") != session:
                log.warning("secagg round %d: ignoring a train reply from node %d outside this round", server_round, node)
                continue
            if record.get("has-update"):
                metrics = next(iter(reply.content.metric_records.values()))
                weights[node] = float(metrics[weighted_by_key]) if weighted_by_key else 1.0
        maskers = sorted(weights)
        if len(maskers) < rules.min_survivors:
            raise _Failed(f"train: {len(maskers)} updates, need t={rules.min_survivors}")
        if sum(weights.values()) <= 0:
            raise _Failed(f"train: the total {weighted_by_key!r} is 0")
        keys = W.flat_keys(global_arrays)
        reference = {k: v.numpy() for k, v in global_arrays.items()}
        size = sum(reference[k].size for k in keys)
        masked = self._exchange(grid, server_round, W.MASK, {
            n: self._request(W.MASK, session, nodes=W.ids_out(maskers), weights=[weights[m] for m in maskers],
                                 **{"weight-key": weighted_by_key})
            for n in maskers}, state)
        total = np.zeros(size, dtype=np.uint32)
        survivors = []
        for node in sorted(masked):
            y = masked[node].content.array_records.get(W.MASKED, {}).get("y")
            vector = y.numpy() if y is not None else None
            if vector is None or vector.dtype != np.uint32 or vector.shape != (size,):
                log.warning("secagg round %d: node %d sent a malformed masked input; treated as dropped", server_round, node)
                continue
            total += vector
            survivors.append(node)
        dropped = [n for n in maskers if n not in survivors]
        if len(survivors) < rules.min_survivors:
            raise _Failed(f"mask: {len(survivors)} masked inputs, need t={rules.min_survivors}")
        survived_weight = sum(weights[n] for n in survivors)
        if survived_weight <= 0:
            raise _Failed(f"mask: the surviving clients' total {weighted_by_key!r} is 0")
        lists = {"survivors": W.ids_out(survivors), "dropped": W.ids_out(dropped)}
        confirmations = self._exchange(grid, server_round, W.CONFIRM, {
            n: self._request(W.CONFIRM, session, **lists) for n in survivors}, state)
        inbox = _route_tags(confirmations, confirmations)
        views = _route_tags({n: masked[n] for n in survivors}, confirmations)
        shares = self._exchange(grid, server_round, W.UNMASK, {
            n: self._request(W.UNMASK, session, **lists, **{"from": inbox[n][0], "tags": inbox[n][1],
                                                             "view-from": views[n][0], "view-tags": views[n][1]})
            for n in confirmations}, state)
        total -= self._masks(state, shares, survivors, dropped, size)
        mean_update = decode(total, self.config.clip_range, self.config.bits) * (sum(weights.values()) / survived_weight)
        new = {k: reference[k] + part for k, part in W.unflatten(mean_update, reference, keys).items()}
        arrays = ArrayRecord({k: Array(new[k].astype(reference[k].dtype)) for k in global_arrays.keys()})
        n = len(maskers)
        metrics = {
            "fedsafe.secagg.survivors": float(len(survivors)), "fedsafe.secagg.dropped": float(len(dropped)),
            "fedsafe.secagg.neighbours": float(rules.k), "fedsafe.secagg.threshold": float(rules.shamir),
            "fedsafe.secagg.bytes-up-per-client": float(np.mean([state.bytes_up.get(m, 0) for m in survivors])),
            "fedsafe.secagg.bytes-down-per-client": float(np.mean([state.bytes_down.get(m, 0) for m in survivors])),
            "fedsafe.secagg.error-bound": error_bound(n, self.config.clip_range, self.config.bits) * sum(weights.values()) / survived_weight,
        }
        return SecureResult(arrays, survived_weight, metrics)

    def _masks(self, state: _Round, shares: dict[int, Message], survivors: list[int],
               dropped: list[int], size: int) -> np.ndarray:
        """The sum of all masks left in the survivors' inputs, rebuilt from revealed shares."""
        seed_shares: dict[int, list[bytes]] = {}
        key_shares: dict[int, list[bytes]] = {}
        for reply in shares.values():
            record = W.stage_of(reply)
            for owner, share in zip(W.ids_in(record.get("seed-of")), record.get("seed-shares") or [], strict=True):
                seed_shares.setdefault(owner, []).append(bytes(share))
            for owner, share in zip(W.ids_in(record.get("key-of")), record.get("key-shares") or [], strict=True):
                key_shares.setdefault(owner, []).append(bytes(share))
        need = state.plan.shamir
        total = np.zeros(size, dtype=np.uint32)
        stream = P.Keystream(size)
        for node in survivors:
            seed = self._recover(seed_shares.get(node, []), need, f"self-mask seed of node {node}")
            if P.commitment(state.session, seed) != state.commitments[node]:
                raise _Failed(f"unmask: the seed of node {node} does not match its commitment (bad shares)")
            total += stream(seed)
        for node in dropped:
            private = self._recover(key_shares.get(node, []), need, f"mask key of dropped node {node}")
            if P.public_of(private) != state.keys[node][1]:
                raise _Failed(f"unmask: the recovered mask key of node {node} does not match its public key")
            for peer in set(state.graph[node]) & set(survivors):
                mask = stream(P.agree(private, state.keys[peer][1], mask_label(state.session, node, peer)))
                if peer < node:
                    total += mask
                else:
                    total -= mask
        return total

    @staticmethod
    def _recover(shares: list[bytes], need: int, what: str) -> bytes:
        if len(shares) < need:
            raise _Failed(f"unmask: {len(shares)} shares of the {what}, need {need} (too many dropouts in its neighbourhood)")
        try:
            return P.join_shares(shares[:need])
        except ValueError as exc:
            raise _Failed(f"unmask: the shares of the {what} do not combine") from exc


def _route_tags(senders: dict[int, Message], recipients: dict[int, Any]) -> dict[int, tuple[list[str], list[bytes]]]:
    """Per recipient, the (sources, tags) of the pairwise MACs the senders addressed to it."""
    inbox: dict[int, tuple[list[str], list[bytes]]] = {n: ([], []) for n in recipients}
    for src, reply in senders.items():
        record = W.stage_of(reply)
        for dst, tag in zip(W.ids_in(record.get("to")), record.get("tags") or [], strict=True):
            if dst in inbox:
                inbox[dst][0].append(str(src))
                inbox[dst][1].append(bytes(tag))
    return inbox
