"""Sample-level privacy budgets: the target, the client's plan, and the noise that fits it.

Epsilon is computed by Opacus's accountants (PRV or RDP) for DP-SGD with Poisson sampling;
the noise multiplier for a plan comes from Opacus's own search (`get_noise_multiplier`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from fedsafe_plugin.config import PrivacyConfig

ACCOUNTANTS = ("prv", "rdp")


class BudgetError(ValueError):
    """A privacy budget or plan is invalid (the message says which value and why)."""


def sample_rate_for(num_records: int, batch_size: int) -> float:
    """Poisson sample rate Opacus uses for `num_records` and an expected batch: 1 / ceil(N / B)."""
    if num_records <= 0:
        raise BudgetError("cannot train with DP on an empty dataset (0 records)")
    if batch_size <= 0:
        raise BudgetError(f"batch size must be > 0, got {batch_size}")
    return 1.0 / math.ceil(num_records / batch_size)


@dataclass(frozen=True)
class Plan:
    """What the client expects to run: rounds it joins, DP-SGD steps per round, sample rate."""

    rounds: int
    local_steps: int
    sample_rate: float

    def __post_init__(self) -> None:
        if self.rounds <= 0:
            raise BudgetError(f"rounds must be > 0, got {self.rounds}")
        if self.local_steps <= 0:
            raise BudgetError(f"local steps must be > 0, got {self.local_steps}")
        if not (isinstance(self.sample_rate, (int, float)) and 0 < self.sample_rate <= 1):
            raise BudgetError(f"sample rate must be in (0, 1], got {self.sample_rate}")

    @property
    def total_steps(self) -> int:
        """DP-SGD steps over the whole plan."""
        return self.rounds * self.local_steps


@dataclass(frozen=True)
class Budget:
    """Target (epsilon, delta), clipping norm C, optional fixed noise multiplier, accountant."""

    epsilon: float
    delta: float
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: str = "prv"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise BudgetError(f"epsilon must be a finite number > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise BudgetError(f"delta must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise BudgetError(f"max grad norm must be > 0, got {self.max_grad_norm}")
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0
        ):
            raise BudgetError(f"noise multiplier must be >= 0, got {self.noise_multiplier}")
        if self.accountant not in ACCOUNTANTS:
            raise BudgetError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}")

    @classmethod
    def from_config(cls, privacy: PrivacyConfig) -> Budget:
        """The budget of the `fedsafe.privacy.*` settings."""
        return cls(privacy.epsilon, privacy.delta, privacy.max_grad_norm, privacy.noise_multiplier, privacy.accountant)

    def check_dataset(self, num_records: int) -> None:
        """Refuse an empty dataset, and a delta above 1/N (it would allow leaking a record)."""
        if num_records <= 0:
            raise BudgetError("cannot train with DP on an empty dataset (0 records)")
        if self.delta > 1.0 / num_records:
            raise BudgetError(
                f"delta={self.delta:g} is larger than 1/N = 1/{num_records}: a mechanism that "
                f"publishes one record outright would meet it; choose delta <= {1.0 / num_records:.3g}"
            )


def epsilon_of(history: list[tuple[float, float, int]], delta: float, accountant: str = "prv") -> float:
    """Epsilon spent by an Opacus accountant history [(sigma, q, steps), ...] at `delta`."""
    return _epsilon(tuple((float(s), float(q), int(n)) for s, q, n in history), float(delta), accountant)


@functools.lru_cache(maxsize=256)
def _epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    """Cached: a private round asks for the same history more than once (preview, then wrapping),
    and one PRV epsilon costs about 0.3 s."""
    from opacus.accountants import create_accountant

    if not history:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in history):
        return math.inf
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=64)
def noise_multiplier_for(budget: Budget, plan: Plan) -> float:
    """The noise multiplier to use: the budget's own, or the smallest that fits the whole plan.

    Opacus's search returns a sigma whose epsilon (same accountant) is at most the target; it is
    cached because every client of a simulation process asks for the same plan in round 1.
    """
    if budget.noise_multiplier is not None:
        return float(budget.noise_multiplier)
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=budget.epsilon,
                target_delta=budget.delta,
                sample_rate=plan.sample_rate,
                steps=plan.total_steps,
                accountant=budget.accountant,
            )
        )
    except ValueError as exc:  # Opacus: "The privacy budget is too low."
        raise BudgetError(
            f"no noise multiplier up to 1e6 fits epsilon={budget.epsilon:g} over "
            f"{plan.total_steps} steps at sample rate {plan.sample_rate:g}: {exc}"
        ) from exc


def epsilon_schedule(noise_multiplier: float, plan: Plan, delta: float, accountant: str = "prv") -> list[float]:
    """Cumulative epsilon after each round of the plan at this noise multiplier."""
    return [
        epsilon_of([(noise_multiplier, plan.sample_rate, r * plan.local_steps)], delta, accountant)
        for r in range(1, plan.rounds + 1)
    ]
