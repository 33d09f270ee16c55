"""`FedDetoxClientMixin`: fedsafe hooks for `class MyClient(FedDetoxClientMixin, NumPyClient)`.

The mixin wraps the subclass's own `fit` and `get_parameters` (via `__init_subclass__`), so the
user's code stays as it is: inside `fit`, `self.fedsafe` is the round's FedSafeSession
(`self.fedsafe.sanitize(...)`, `self.fedsafe.train_dpo(...)`); after `fit`, the update is checked
(NaN/inf, shapes), bounded if configured, and the `fedsafe.*` metrics are added. Bind the
ClientApp context (a `context` attribute, or `.with_context(context)`) so state (sanitization
cache, accountant) survives across rounds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from fedsafe_plugin.client.session import FedSafeSession, config_from_mapping
from fedsafe_plugin.validation import clip_update, find_problem

log = logging.getLogger("flwr.fedsafe")


def _guard_fit(fit: Callable) -> Callable:
    @functools.wraps(fit)
    def wrapper(self: Any, parameters: list, config: dict) -> tuple[list, int, dict]:
        fedsafe_config = config_from_mapping(config)
        state = self._fedsafe_state(fedsafe_config.privacy.enabled)
        self.fedsafe = FedSafeSession(fedsafe_config, state, getattr(self._fedsafe_context, "node_config", None))
        new_params, num_examples, metrics = fit(self, parameters, config)
        unaccounted = self.fedsafe.unaccounted()
        if unaccounted is not None:
            raise ValueError(f"fedsafe: update not sent: {unaccounted}")
        metrics = {**metrics, **self.fedsafe.metrics}
        if self.fedsafe.exhausted:  # budget spent: send the global back untouched, weight 0
            return parameters, 0, metrics
        reference, update = dict(enumerate(parameters)), dict(enumerate(new_params))
        problem = find_problem(update, reference)
        if problem is not None:
            raise ValueError(f"fedsafe: update not sent: {problem}")
        bound = self.fedsafe.config.validate.max_update_norm
        if bound > 0:
            clipped = clip_update(update, reference, bound)
            new_params = [clipped[i] for i in range(len(new_params))]
        return new_params, num_examples, metrics

    return wrapper


def _guard_get_parameters(get_parameters: Callable) -> Callable:
    @functools.wraps(get_parameters)
    def wrapper(self: Any, config: dict) -> list:
        params = get_parameters(self, config)
        bad = [i for i, p in enumerate(params) if not np.all(np.isfinite(p))]
        if bad:
            raise ValueError(f"fedsafe: parameters {bad[:5]} contain NaN or inf")
        return params

    return wrapper


class FedDetoxClientMixin:
    """Put first in the bases: `class MyClient(FedDetoxClientMixin, NumPyClient)`."""

    fedsafe: FedSafeSession
    _fedsafe_context: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "fit" in own:
            cls.fit = _guard_fit(own["fit"])
        if "get_parameters" in own:
            cls.get_parameters = _guard_get_parameters(own["get_parameters"])

    def with_context(self, context: Any) -> Any:
        """Bind the ClientApp context (its `state` outlives this client object); returns self."""
        self._fedsafe_context = context
        return self

    def _fedsafe_state(self, private: bool) -> Any:
        if self._fedsafe_context is None:
            self._fedsafe_context = getattr(self, "context", None)
        if self._fedsafe_context is None:
            from flwr.app import RecordDict

            if private:  # Flower builds a new client every round: the accountant would start at 0 each time
                raise ValueError("fedsafe: DP-SGD needs the ClientApp context (set self.context, or return "
                                 "MyClient(...).with_context(context) from client_fn) so the privacy budget "
                                 "composes across rounds")
            log.warning("fedsafe: client not bound with .with_context(context); state will not survive rounds")
            self._fedsafe_context = SimpleNamespace(state=RecordDict())
        return self._fedsafe_context.state
