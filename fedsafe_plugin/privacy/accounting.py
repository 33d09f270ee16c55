"""A client's DP-SGD ledger across rounds, kept in Flower's `context.state` so epsilon composes.

The ledger is the Opacus accountant history [(sigma, q, steps), ...] plus the budget pinned at
the first private round. The Deployment Engine starts a fresh process per message, so the ledger
is written to a ConfigRecord after each round and read back before the next.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

from fedsafe_plugin.privacy.budget import Budget, epsilon_of

log = logging.getLogger("flwr.fedsafe")

STATE_KEY = "fedsafe.dp.ledger"


@dataclass
class Ledger:
    """Accountant history and the budget pinned at first use (a server cannot raise it later)."""

    history: list[tuple[float, float, int]] = field(default_factory=list)
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    rounds: int = 0

    def pin(self, budget: Budget) -> Budget:
        """The budget to enforce: pinned on first use; later configs may lower epsilon, never raise it."""
        if self.epsilon is None or self.delta is None:
            self.epsilon, self.delta = budget.epsilon, budget.delta
            return budget
        if budget.epsilon > self.epsilon or budget.delta != self.delta:
            log.warning(
                "fedsafe: privacy budget changed after training began (epsilon %g -> %g, delta %g -> %g); "
                "keeping epsilon <= %g at delta %g",
                self.epsilon, budget.epsilon, self.delta, budget.delta, self.epsilon, self.delta,
            )
        self.epsilon = min(self.epsilon, budget.epsilon)
        return replace(budget, epsilon=self.epsilon, delta=self.delta)

    def spent(self, accountant: str) -> float:
        """Epsilon spent so far (0 before any step) at the pinned delta."""
        return epsilon_of(self.history, self.delta, accountant) if self.history and self.delta else 0.0

    def projected(self, noise_multiplier: float, sample_rate: float, steps: int) -> list[tuple[float, float, int]]:
        """The history after `steps` more steps, built with Opacus's own `step` (same merging as training)."""
        from opacus.accountants import create_accountant

        acc = create_accountant(mechanism="rdp")  # `step` is identical for prv and rdp
        acc.history = list(self.history)
        for _ in range(steps):
            acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
        return list(acc.history)

    def preview(self, budget: Budget, noise_multiplier: float, sample_rate: float, steps: int) -> tuple[bool, float]:
        """(would `steps` more steps take epsilon past the budget?, epsilon after them)."""
        after = epsilon_of(self.projected(noise_multiplier, sample_rate, steps), budget.delta, budget.accountant)
        return (not math.isfinite(after)) or after > budget.epsilon, after

    def to_record(self) -> Any:
        """The ledger as a Flower ConfigRecord (exact: floats travel as doubles)."""
        from flwr.app import ConfigRecord

        values: dict[str, Any] = {
            "sigmas": [float(s) for s, _, _ in self.history],
            "sample-rates": [float(q) for _, q, _ in self.history],
            "steps": [int(n) for _, _, n in self.history],
            "rounds": int(self.rounds),
        }
        for name in ("epsilon", "delta", "noise_multiplier"):
            if getattr(self, name) is not None:
                values[name.replace("_", "-")] = float(getattr(self, name))
        return ConfigRecord(values)

    @classmethod
    def from_record(cls, record: Any) -> Ledger:
        """Inverse of `to_record`."""
        history = list(zip(
            [float(s) for s in record["sigmas"]],
            [float(q) for q in record["sample-rates"]],
            [int(n) for n in record["steps"]],
            strict=True,
        ))
        opt = {k: float(record[k.replace("_", "-")]) for k in ("epsilon", "delta", "noise_multiplier") if k.replace("_", "-") in record}
        return cls(history=history, rounds=int(record["rounds"]), **opt)

    @classmethod
    def load(cls, state: Any) -> Ledger:
        """The ledger kept in `context.state` (a fresh one if there is none yet)."""
        record = state.config_records.get(STATE_KEY)
        return cls() if record is None else cls.from_record(record)

    def save(self, state: Any) -> None:
        """Write the ledger into `context.state`."""
        state[STATE_KEY] = self.to_record()
