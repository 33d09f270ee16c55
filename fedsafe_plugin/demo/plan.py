"""What a demo or benchmark run does: the arms, the shared settings, and which fedsafe parts are on.

Every arm of one run uses the same seeds, model, client split and evaluation suite; arms differ
only in their data (poisoned or not) and the fedsafe features switched on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedsafe_plugin.config import FedSafeConfig
from fedsafe_plugin.training.local import TrainSettings


@dataclass(frozen=True)
class Arm:
    """One experimental arm."""

    name: str
    label: str
    poisoned: bool = True
    sanitize: bool = False
    dp: bool = False
    secagg: bool = False
    centralized: bool = False


@dataclass(frozen=True)
class Plan:
    """Settings shared by every arm of a run."""

    clients: int = 10
    rounds: int = 3
    poison_fraction: float = 0.3
    model: str = "tiny"
    pairs_per_client: int = 24
    local_steps: int = 10
    batch_size: int = 8
    lr: float = 2e-2
    beta: float = 0.1
    max_length: int = 128
    seed: int = 0
    data_dir: str | None = None
    eval_limit: int = 0  # contrasts per evaluation set; 0 = the whole suite
    overrides: dict[str, Any] = field(default_factory=dict)  # `fedsafe.*` keys given with --set

    def __post_init__(self) -> None:
        checks = (
            (self.clients >= 1, f"clients must be >= 1, got {self.clients}"),
            (self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}"),
            (0 <= self.poison_fraction < 1, f"poison fraction must be in [0, 1), got {self.poison_fraction}"),
            (self.pairs_per_client >= 1, f"pairs per client must be >= 1, got {self.pairs_per_client}"),
            (self.local_steps >= 1, f"local steps must be >= 1, got {self.local_steps}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (0 < self.lr < float("inf"), f"learning rate must be a finite number > 0, got {self.lr}"),
            (self.eval_limit >= 0, f"eval limit must be >= 0, got {self.eval_limit}"),
            # The arms are defined by it: an override would make the unsanitized arm sanitize.
            ("fedsafe.sanitize.enabled" not in self.overrides, "fedsafe.sanitize.enabled is what the arms differ in; it cannot be set"),
        )
        for ok, reason in checks:
            if not ok:
                raise ValueError(reason)

    def train_settings(self, batch_size: int | None = None) -> TrainSettings:
        """One client's local training settings (a larger batch for the centralized arm)."""
        return TrainSettings(self.local_steps, batch_size or self.batch_size, self.lr, self.beta, self.max_length, self.seed)


def arm_config(plan: Plan, arm: Arm) -> FedSafeConfig:
    """The arm's fedsafe settings: its switches, then the user's overrides."""
    values: dict[str, Any] = {
        "fedsafe.sanitize.enabled": arm.sanitize,
        "fedsafe.privacy.enabled": arm.dp,
        "fedsafe.privacy.rounds": plan.rounds,
        "fedsafe.privacy.local-steps": plan.local_steps,
        "fedsafe.privacy.batch-size": plan.batch_size,
        "fedsafe.secagg.mode": "secagg+" if arm.secagg else "none",
    }
    values.update(plan.overrides)
    return FedSafeConfig.from_run_config(values)


def switched_on(config: FedSafeConfig) -> dict[str, Any]:
    """What an arm really ran with, for the report."""
    return {
        "sanitize": config.sanitize.enabled,
        "dp": config.privacy.enabled,
        "epsilon_budget": config.privacy.epsilon if config.privacy.enabled else None,
        "secagg": config.secagg.mode,
    }


DEMO_ARMS = (
    Arm("unsanitized", "poisoned, no sanitization (DP + SecAgg)", dp=True, secagg=True),
    Arm("feddetox", "poisoned + FedDetox (sanitize + DP + SecAgg)", sanitize=True, dp=True, secagg=True),
)

BENCH_ARMS = (
    Arm("centralized-benign", "centralized, benign data", poisoned=False, centralized=True),
    Arm("benign", "federated, benign only", poisoned=False),
    Arm("unsanitized", "federated, poisoned, no sanitization"),
    Arm("feddetox", "federated, poisoned + FedDetox", sanitize=True),
    Arm("feddetox-dp", "FedDetox + DP", sanitize=True, dp=True),
    Arm("feddetox-dp-secagg", "FedDetox + DP + SecAgg+", sanitize=True, dp=True, secagg=True),
)
