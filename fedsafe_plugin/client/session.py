"""Client-side hooks in one place: config from the message, sanitization, (DP) training, reply.

Used by Message-API `@app.train` functions (opened by `fedsafe_mod`) and by the NumPyClient mixin. Everything that
must outlive one message (sanitization cache, privacy accountant) lives in `context.state`,
because the Deployment Engine starts a fresh ClientApp process for every message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextvars import ContextVar
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fedsafe_plugin.config import PREFIX, FedSafeConfig

_ACTIVE: ContextVar[FedSafeSession] = ContextVar("fedsafe_session")

SANITIZE_STATE_KEY = "fedsafe.sanitize.cache"
EXHAUSTED_KEY = "fedsafe.dp.exhausted"


def config_from_mapping(values: Mapping[str, Any]) -> FedSafeConfig:
    """The fedsafe settings carried in a train config (other keys ignored)."""
    return FedSafeConfig.from_config_record({k: v for k, v in values.items() if k.startswith(PREFIX)})


def config_from_message(msg: Any, configrecord_key: str = "config") -> FedSafeConfig:
    """The fedsafe settings the server put into this train message's ConfigRecord."""
    records = msg.content.config_records
    return config_from_mapping(records[configrecord_key] if configrecord_key in records else {})


def is_exhausted(metrics: Mapping[str, Any]) -> bool:
    """True when a reply says its privacy budget is spent (it carries no usable update)."""
    return metrics.get(EXHAUSTED_KEY, 0) == 1


class FedSafeSession:
    """One client's view of a fedsafe round; collects the `fedsafe.*` metrics for the reply."""

    def __init__(self, config: FedSafeConfig, state: Any) -> None:
        self.config = config
        self.state = state
        self.metrics: dict[str, float] = {}
        self.exhausted = False

    @classmethod
    def from_message(cls, msg: Any, context: Any) -> FedSafeSession:
        """The session `fedsafe_mod` opened for this train message (the mod is required)."""
        session = _ACTIVE.get(None)
        if session is None or session.state is not context.state:
            raise RuntimeError("FedSafeSession needs fedsafe's mods: use @app.train(mods=fedsafe_mods())")
        return session

    def sanitize(self, records: Sequence[dict]) -> list[dict]:
        """Sanitize local records once per dataset and settings; later rounds reuse the cache."""
        cfg = self.config.sanitize
        if not cfg.enabled:
            return list(records)
        from flwr.app import ConfigRecord

        key = _fingerprint({"records": list(records), "settings": cfg.__dict__})
        cached = self.state.config_records.get(SANITIZE_STATE_KEY)
        hit = cached is not None and cached["fingerprint"] == key
        if hit:
            clean, audit = json.loads(str(cached["records"])), json.loads(str(cached["audit"]))
        else:
            from fedsafe_plugin.sanitize import Sanitizer

            result = Sanitizer.from_config(cfg).sanitize(list(records))
            clean, audit = result.records, dict(result.audit)
            self.state[SANITIZE_STATE_KEY] = ConfigRecord(
                {"fingerprint": key, "records": json.dumps(clean), "audit": json.dumps(audit)}
            )
        self.metrics.update({f"fedsafe.sanitize.{k}": float(v) for k, v in audit.items()})
        self.metrics["fedsafe.sanitize.cached"] = float(hit)
        return clean

    def train_dpo(self, model: Any, pairs: Sequence[Any], settings: Any, pad_id: int) -> dict[str, float]:
        """Drop-in for `training.local.train_dpo`: DP-SGD with budget enforcement when enabled.

        Once this client has trained privately, it stays private: a later server config with
        privacy disabled cannot switch DP off (the pinned budget keeps applying).
        """
        from fedsafe_plugin.privacy.accounting import STATE_KEY

        privacy = self.config.privacy
        if not privacy.enabled and STATE_KEY not in self.state.config_records:
            from fedsafe_plugin.training.local import train_dpo

            return train_dpo(model, pairs, settings, pad_id)
        from fedsafe_plugin.training.dp import train_dpo_private

        privacy = dataclasses.replace(privacy, enabled=True)
        result = train_dpo_private(model, list(pairs), settings, privacy, self.state, pad_id)
        self.exhausted = result.exhausted
        fedsafe = {k: float(v) for k, v in result.metrics.items() if k.startswith(PREFIX)}
        self.metrics.update(fedsafe)
        return {k: float(v) for k, v in result.metrics.items() if k not in fedsafe}


@contextmanager
def active_session(config: FedSafeConfig, state: Any) -> Iterator[FedSafeSession]:
    """Open the session that `FedSafeSession.from_message` returns while the app runs."""
    session = FedSafeSession(config, state)
    token = _ACTIVE.set(session)
    try:
        yield session
    finally:
        _ACTIVE.reset(token)


def _fingerprint(obj: Any) -> str:
    """sha256 of a canonical JSON encoding: equal data and settings give equal keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
