"""Message-API mods for `@app.train(mods=fedsafe_mods())`.

Register them on `train` only: Flower's own DP mod registered globally breaks on evaluate replies.
`fedsafe_mod` rejects a bad fedsafe config with a clear error reply, opens the round's
FedSafeSession for the app, and checks the app's reply before it leaves the device: the session's
`fedsafe.*` metrics are added, with privacy on no update leaves unless it was trained through the
session (DP-SGD) and the budget is not spent, no NaN/inf,
exactly the adapter keys and shapes the server sent, and (if a bound is set) the update is scaled
down to it, which still works under secure aggregation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fedsafe_plugin.client.session import FedSafeSession, active, config_from_message
from fedsafe_plugin.config import ConfigError
from fedsafe_plugin.privacy.budget import BudgetError
from fedsafe_plugin.validation import as_ndarrays, clip_update, find_problem, to_array_record

log = logging.getLogger("flwr.fedsafe")

Mod = Callable[[Any, Any, Callable[[Any, Any], Any]], Any]


def _error_reply(msg: Any, reason: str) -> Any:
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    log.error("fedsafe: %s", reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"fedsafe: {reason}"), reply_to=msg)


def fedsafe_mod(msg: Any, context: Any, call_next: Callable[[Any, Any], Any]) -> Any:
    """Validate config in and adapter out of a train message (see module docstring)."""
    try:
        config = config_from_message(msg)
    except ConfigError as exc:
        return _error_reply(msg, f"bad config from the server: {exc}")
    sent = msg.content.array_records
    try:
        session = FedSafeSession(config, context.state, context.node_config)
    except (ConfigError, BudgetError) as exc:  # bad node config or an unreadable device ledger
        return _error_reply(msg, str(exc))
    with active(session):
        reply = call_next(msg, context)
    if reply.has_error():
        return reply
    unaccounted = session.unaccounted()
    if unaccounted is not None:
        return _error_reply(msg, f"update not sent: {unaccounted}")
    for record in reply.content.metric_records.values():
        record.update(session.metrics)
    if session.exhausted:  # budget spent: nothing trained may leave, only the metrics
        for key in list(reply.content.array_records):
            del reply.content[key]
        return reply
    if len(sent) != 1 or set(reply.content.array_records) != set(sent):
        return _error_reply(msg, f"reply must carry exactly the array record(s) {sorted(sent)}")
    (key, global_arrays), = sent.items()
    reference, update = as_ndarrays(global_arrays), as_ndarrays(reply.content.array_records[key])
    problem = find_problem(update, reference)
    if problem is not None:
        return _error_reply(msg, f"update not sent: {problem}")
    bound = config.validate.max_update_norm
    if bound > 0:
        try:
            reply.content[key] = to_array_record(clip_update(update, reference, bound))
        except ValueError as exc:
            return _error_reply(msg, f"update not sent: {exc}")
    return reply


def fedsafe_mods() -> list[Mod]:
    """The train mods, outermost first: on the way back fedsafe_mod checks the reply, then
    client-level DP clips it (when configured), then secure aggregation masks it (when configured)."""
    from fedsafe_plugin.privacy.client_dp import client_dp_mod
    from fedsafe_plugin.privacy.secagg.client_mod import secagg_mod

    return [secagg_mod, client_dp_mod, fedsafe_mod]


def fedsafe_evaluate_mods() -> list[Mod]:
    """The evaluate mods: in `ckks` mode the global adapter arrives encrypted and is decrypted here."""
    from fedsafe_plugin.privacy.secagg.client_mod import secagg_mod

    return [secagg_mod]
