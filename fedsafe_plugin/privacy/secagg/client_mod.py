"""`secagg_mod`: the client half of secure aggregation, outermost in `@app.train(mods=[...])`.

SecAgg+: answers the stage messages itself (the app never sees them); on the train message it
opens the neighbours' shares, lets the app train, keeps the plaintext update in `context.state`
and replies with metrics only; the masked update goes out in the later `mask` stage.
CKKS: decrypts an encrypted global into plaintext before the app runs and encrypts
n_k * (new weights) after. Also register it on `@app.evaluate(mods=[secagg_mod])` in CKKS mode
so evaluation gets plaintext weights. Protocol errors become error replies (logged here, and
seen by the server as a refusal), never a hang.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from fedsafe_plugin.client.session import config_from_message, is_exhausted
from fedsafe_plugin.config import ConfigError
from fedsafe_plugin.privacy.secagg import ckks as C
from fedsafe_plugin.privacy.secagg import client as S
from fedsafe_plugin.privacy.secagg import wire as W
from fedsafe_plugin.privacy.secagg.primitives import SecAggError

log = logging.getLogger("flwr.fedsafe")

CONTEXT_NODE_KEY = "fedsafe-ckks-context"
CONTEXT_ENV = "FEDSAFE_CKKS_CONTEXT"
MIN_CLIENTS_NODE_KEY = "fedsafe-secagg-min-clients"
_CONTEXT_STATE = "fedsafe.secagg.ckks"


def _refuse(msg: Message, reason: str) -> Message:
    log.error("fedsafe secagg: refusing: %s", reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"fedsafe secagg: {reason}"), reply_to=msg)


def _load_state(context: Any) -> dict[str, Any] | None:
    records = context.state.config_records
    return dict(records[W.STATE]) if W.STATE in records else None


def _save_state(context: Any, state: dict[str, Any]) -> None:
    context.state[W.STATE] = ConfigRecord(state)


def _forget(context: Any, *names: str) -> None:
    for name in names:
        if name in context.state:
            del context.state[name]


def secagg_mod(msg: Message, context: Any, call_next: Callable[[Message, Any], Message]) -> Message:
    """Run this client's side of SecAgg+ or CKKS around the app (see the module docstring)."""
    try:
        if msg.metadata.message_type != "train":
            return _evaluate(msg, context, call_next)
        record = W.stage_of(msg)
        if record is None:
            return _unprotected(msg, context, call_next)
        if record.get("stage") == "ckks":
            return _ckks_train(msg, context, call_next, record)
        return _secagg_stage(msg, context, call_next, record)
    except _AppRaised as wrapped:  # the app's own error is the app's, not a secagg refusal
        error = wrapped.__cause__
        assert error is not None
        raise error from error.__cause__
    except (SecAggError, ConfigError, KeyError, ValueError, TypeError) as exc:
        return _refuse(msg, f"{type(exc).__name__}: {exc}" if not isinstance(exc, SecAggError) else str(exc))


class _AppRaised(Exception):
    """Carries an exception raised by the app (or the mods inside this one) past secagg_mod's handler."""


def _min_clients(context: Any) -> int:
    """The client's own floor on the clients in a secure sum (node config; 0 = the server's t only)."""
    value = context.node_config.get(MIN_CLIENTS_NODE_KEY, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or not str(value).isdigit():
        raise ConfigError(f"node config {MIN_CLIENTS_NODE_KEY}: expected a whole number >= 0, got {value!r}")
    return int(value)


def _unprotected(msg: Message, context: Any, call_next: Callable[[Message, Any], Message]) -> Message:
    mode = config_from_message(msg).secagg.mode
    if mode != "none":
        raise SecAggError(f"secure aggregation is {mode!r} but this train message carries no setup from the server; "
                          "refusing to send a plaintext update")
    if W.STATE in context.state or _CONTEXT_STATE in context.state:
        # Like the DP budget, secure aggregation is pinned once used: a server cannot switch it off mid-run.
        raise SecAggError("this client sent only masked or encrypted updates earlier in this run; "
                          "refusing a plaintext one now that the server turned secure aggregation off")
    return call_next(msg, context)


def _secagg_stage(msg: Message, context: Any, call_next: Callable[[Message, Any], Message], record: dict[str, Any]) -> Message:
    node = msg.metadata.dst_node_id
    stage = record.get("stage")
    state = _load_state(context)
    if stage == W.ADVERTISE:
        _forget(context, W.STASH, W.STASH_METRICS)
        state, content = S.advertise(node, record, _min_clients(context))
    elif stage == W.SHARE_KEYS:
        state, content = S.share_keys(node, state, record)
    elif stage == W.TRAIN:
        _save_state(context, S.receive_shares(node, state, record))
        return _secagg_train(msg, context, call_next, record)
    elif stage == W.MASK:
        if W.STASH not in context.state:
            raise SecAggError("mask: this client holds no update for the round (it did not train)")
        weight = _weight(dict(context.state.metric_records[W.STASH_METRICS]), str(record["weight-key"]))
        update = context.state.array_records[W.STASH]["update"].numpy()
        state, content = S.mask(node, state, record, update, weight)
        _forget(context, W.STASH, W.STASH_METRICS)
    elif stage == W.CONFIRM:
        state, content = S.confirm(node, state, record)
    elif stage == W.UNMASK:
        state, content = S.unmask(node, state, record)
        state = {k: v for k, v in state.items() if k in ("session", "done")}  # secrets are spent
    else:
        raise SecAggError(f"unknown secagg stage {stage!r}")
    _save_state(context, state)
    return Message(content, reply_to=msg)


def _weight(metrics: dict[str, Any], weight_key: str) -> float:
    """This client's aggregation weight: its `weight_key` metric, or 1 when the server asks for a
    plain mean (weight key "", as client-level DP needs)."""
    return float(metrics[weight_key]) if weight_key else 1.0


def _call_app(msg: Message, context: Any, call_next: Callable[[Message, Any], Message]) -> Message:
    """Run the app (and the mods inside this one) on the train message without the secagg setup
    record: they see the train message the strategy sent (Flower's fixedclipping_mod, for one,
    requires exactly one ConfigRecord)."""
    del msg.content[W.RECORD]
    try:
        return call_next(msg, context)
    except Exception as exc:
        raise _AppRaised() from exc


def _secagg_train(msg: Message, context: Any, call_next: Callable[[Message, Any], Message], record: dict[str, Any]) -> Message:
    (key, sent), = msg.content.array_records.items()
    reply = _call_app(msg, context, call_next)
    if reply.has_error():
        return reply
    has_update = bool(reply.content.array_records) and not any(is_exhausted(m) for m in reply.content.metric_records.values())
    if has_update:
        received = reply.content.array_records[key]
        order = W.flat_keys(sent)
        if W.flat_keys(received) != order:
            raise SecAggError("the app's reply has different array keys than the global model")
        now = {k: received[k].numpy() for k in order}
        before = {k: sent[k].numpy() for k in order}
        update = W.flatten(now, order) - W.flatten(before, order)
        if not np.all(np.isfinite(update)):
            raise SecAggError("the update contains NaN or inf; not sent")
        context.state[W.STASH] = ArrayRecord({"update": Array(update.astype(np.float32))})
        (metrics,) = reply.content.metric_records.values()
        context.state[W.STASH_METRICS] = MetricRecord(dict(metrics))
    content = RecordDict({name: ArrayRecord() for name in reply.content.array_records})
    for name, metrics in reply.content.metric_records.items():
        content[name] = metrics
    for name, config in reply.content.config_records.items():
        content[name] = config
    content[W.RECORD] = ConfigRecord({"stage": W.TRAIN, "session": record["session"], "has-update": has_update})
    return Message(content, reply_to=msg)


def _secret_keys(context: Any, configured: str) -> C.CKKSKeys:
    path = context.node_config.get(CONTEXT_NODE_KEY) or os.environ.get(CONTEXT_ENV) or configured
    if path:
        context.state[_CONTEXT_STATE] = ConfigRecord({"path": str(path)})
    elif _CONTEXT_STATE in context.state:
        path = str(context.state.config_records[_CONTEXT_STATE]["path"])
    return C.load(str(path or ""), "secret")


def _decrypt_into(msg: Message, keys: C.CKKSKeys) -> tuple[str, ArrayRecord]:
    """Replace an encrypted global in `msg` by its plaintext; return (record name, plaintext)."""
    (name, arrays), = msg.content.array_records.items()
    if C.is_encrypted(arrays):
        arrays = ArrayRecord({k: Array(v) for k, v in C.decrypt(keys, arrays).items()})
        msg.content[name] = arrays
    return name, arrays


def _ckks_train(msg: Message, context: Any, call_next: Callable[[Message, Any], Message], record: dict[str, Any]) -> Message:
    keys = _secret_keys(context, config_from_message(msg).secagg.ckks_context)
    if record.get("key-id") != keys.key_id:
        raise C.CKKSKeyError(f"the server uses CKKS key set {record.get('key-id')!r}, this client holds {keys.key_id!r} "
                             "(wrong or stale context)")
    name, _ = _decrypt_into(msg, keys)
    reply = _call_app(msg, context, call_next)
    if reply.has_error() or not reply.content.array_records or any(is_exhausted(m) for m in reply.content.metric_records.values()):
        return reply
    (metrics,) = reply.content.metric_records.values()
    weight = _weight(dict(metrics), str(record["weight-key"]))
    arrays = {k: v.numpy() for k, v in reply.content.array_records[name].items()}
    reply.content[name] = C.encrypt(keys, arrays, weight, int(record["clients"]))
    return reply


def _evaluate(msg: Message, context: Any, call_next: Callable[[Message, Any], Message]) -> Message:
    records = msg.content.array_records
    if len(records) == 1 and C.is_encrypted(next(iter(records.values()))):
        _decrypt_into(msg, _secret_keys(context, ""))
    return call_next(msg, context)
