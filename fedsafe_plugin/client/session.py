"""Client-side hooks in one place: config from the message, sanitization, (DP) training, reply.

Used by Message-API `@app.train` functions (opened by `fedsafe_mod`) and by the NumPyClient mixin. Everything that
must outlive one message (sanitization cache, privacy accountant) lives in `context.state`,
because the Deployment Engine starts a fresh ClientApp process for every message.
"""

from __future__ import annotations

import dataclasses
import json
from contextvars import ContextVar
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedsafe_plugin.config import PREFIX, ConfigError, FedSafeConfig
from fedsafe_plugin.privacy.accounting import (
    DEVICE_LEDGER_KEY, EPSILON, EXHAUSTED, STATE_KEY, device_ledger, load_device_ledger,
)

_ACTIVE: ContextVar[FedSafeSession] = ContextVar("fedsafe_session")

SANITIZE_STATE_KEY = "fedsafe.sanitize.cache"


def config_from_mapping(values: Mapping[str, Any]) -> FedSafeConfig:
    """The fedsafe settings carried in a train config (other keys ignored)."""
    return FedSafeConfig.from_config_record({k: v for k, v in values.items() if k.startswith(PREFIX)})


def config_from_message(msg: Any, configrecord_key: str = "config") -> FedSafeConfig:
    """The fedsafe settings the server put into this train message's ConfigRecord."""
    records = msg.content.config_records
    return config_from_mapping(records[configrecord_key] if configrecord_key in records else {})


def is_exhausted(metrics: Mapping[str, Any]) -> bool:
    """True when a reply says its privacy budget is spent (it carries no usable update)."""
    return metrics.get(EXHAUSTED, 0) == 1


def device_ledger_path(node_config: Mapping[str, Any]) -> str | None:
    """The node's `fedsafe-dp-ledger` file (None if unset): an absolute path in an existing folder.

    A relative path would follow the ClientApp process's working directory, which may change
    between runs and silently start a fresh budget.
    """
    path = node_config.get(DEVICE_LEDGER_KEY)
    if path is None:
        return None
    if not (isinstance(path, str) and path):
        raise ConfigError(f"node config {DEVICE_LEDGER_KEY} must be a file path, got {path!r}")
    full = Path(path).expanduser()
    if not full.is_absolute() or not full.parent.is_dir():
        raise ConfigError(f"node config {DEVICE_LEDGER_KEY}={path!r} must be an absolute path in an existing folder")
    return str(full)


def lacks_dp(metrics: Mapping[str, Any], config: FedSafeConfig) -> str | None:
    """Why a reply cannot count when the server asked for DP-SGD (no `fedsafe.dp.epsilon`), or None.

    A client without fedsafe's mods, or one that trained outside the session, sends no epsilon;
    this catches that misconfiguration, not a client that lies (see the README's threat model).
    """
    if config.privacy.enabled and EPSILON not in metrics:
        return f"privacy is enabled but the reply has no {EPSILON!r} (not trained with fedsafe's DP-SGD)"
    return None


class FedSafeSession:
    """One client's view of a fedsafe round; collects the `fedsafe.*` metrics for the reply."""

    def __init__(self, config: FedSafeConfig, state: Any, node_config: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.state = state
        self.ledger_path = device_ledger_path(node_config or {})
        load_device_ledger(self.ledger_path, state)
        self.metrics: dict[str, float] = {}
        self.exhausted = False
        # Once this client has trained privately it stays private: a later server config with
        # privacy disabled cannot switch DP off (the pinned budget keeps applying).
        self.private = config.privacy.enabled or STATE_KEY in state.config_records
        self.accounted = False  # set by a private train_*: the reply may carry an update

    @classmethod
    def from_message(cls, msg: Any, context: Any) -> FedSafeSession:
        """The session `fedsafe_mod` opened for this train message (the mod is required)."""
        session = _ACTIVE.get(None)
        if session is None or session.state is not context.state:
            raise RuntimeError("FedSafeSession needs fedsafe's mods: use @app.train(mods=fedsafe_mods())")
        return session

    def sanitize(self, records: Sequence[dict]) -> list[dict]:
        """Sanitize local records once per dataset, settings and student; later rounds reuse the cache."""
        cfg = self.config.sanitize
        if not cfg.enabled:
            return list(records)
        from flwr.app import ConfigRecord

        from fedsafe_plugin.sanitize import Sanitizer, fingerprint

        key = fingerprint(records, cfg)
        cached = self.state.config_records.get(SANITIZE_STATE_KEY)
        hit = cached is not None and cached["fingerprint"] == key
        if hit:
            clean, audit = json.loads(str(cached["records"])), json.loads(str(cached["audit"]))
        else:
            result = Sanitizer.from_config(cfg).sanitize(list(records))
            stored, audit = json.dumps(result.records), dict(result.audit)
            clean = json.loads(stored)  # the records a cache hit returns, so every round sees the same data
            self.state[SANITIZE_STATE_KEY] = ConfigRecord(
                {"fingerprint": key, "records": stored, "audit": json.dumps(audit)}
            )
        self.metrics.update({f"fedsafe.sanitize.{k}": float(v) for k, v in audit.items()})
        self.metrics["fedsafe.sanitize.cached"] = float(hit)
        return clean

    def train_dpo(self, model: Any, pairs: Sequence[Any], settings: Any, pad_id: int) -> dict[str, float]:
        """Drop-in for `fedsafe_plugin.train_dpo` (pairs from `encode_pairs`): DP-SGD within the budget when private."""
        from fedsafe_plugin.training.dp import train_dpo_private
        from fedsafe_plugin.training.local import train_dpo

        return self._train(train_dpo, train_dpo_private, model, pairs, settings, pad_id)

    def train_sft(self, model: Any, samples: Sequence[tuple[list[int], list[int]]], settings: Any, pad_id: int) -> dict[str, float]:
        """SFT on (prompt ids, response ids) samples: DP-SGD within the budget when private."""
        from fedsafe_plugin.training.dp import train_sft_private
        from fedsafe_plugin.training.local import train_sft

        return self._train(train_sft, train_sft_private, model, samples, settings, pad_id)

    def _train(self, plain: Any, private: Any, model: Any, data: Sequence[Any], settings: Any, pad_id: int) -> dict[str, float]:
        if not self.private:
            return plain(model, data, settings, pad_id)
        privacy = dataclasses.replace(self.config.privacy, enabled=True)
        with device_ledger(self.ledger_path, self.state):
            result = private(model, list(data), settings, privacy, self.state, pad_id)
        self.exhausted, self.accounted = result.exhausted, True
        fedsafe = {k: float(v) for k, v in result.metrics.items() if k.startswith(PREFIX)}
        self.metrics.update(fedsafe)
        return {k: float(v) for k, v in result.metrics.items() if k not in fedsafe}

    def unaccounted(self) -> str | None:
        """Why the app's update must not leave (privacy on, but it never trained through this session), or None."""
        if self.private and not self.accounted:
            return ("privacy is enabled but the app did not train through FedSafeSession.train_dpo/train_sft, "
                    "so its update carries no DP guarantee")
        return None


@contextmanager
def active(session: FedSafeSession) -> Iterator[FedSafeSession]:
    """Make `session` the one `FedSafeSession.from_message` returns while the app runs."""
    token = _ACTIVE.set(session)
    try:
        yield session
    finally:
        _ACTIVE.reset(token)
