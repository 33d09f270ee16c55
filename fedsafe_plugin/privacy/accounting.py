"""A client's DP-SGD ledger across rounds, kept in Flower's `context.state` so epsilon composes.

The ledger is the Opacus accountant history [(sigma, q, steps), ...] plus the budget pinned at
the first private round. The Deployment Engine starts a fresh process per message, so the ledger
is written to a ConfigRecord after each round and read back before the next. A new run starts
with an empty `context.state`; a SuperNode that sets `fedsafe-dp-ledger` keeps the ledger in
that file too, so its budget holds across runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedsafe_plugin.config import PrivacyConfig
from fedsafe_plugin.privacy.budget import Budget, BudgetError, epsilon_of

log = logging.getLogger("flwr.fedsafe")

STATE_KEY = "fedsafe.dp.ledger"
DEVICE_LEDGER_KEY = "fedsafe-dp-ledger"  # node config: a file that keeps the ledger across runs
# The reply metrics of a private round (one name each, shared by clients and server).
EPSILON = "fedsafe.dp.epsilon"
EXHAUSTED = "fedsafe.dp.exhausted"
NOISE = "fedsafe.dp.noise-multiplier"
DELTA = "fedsafe.dp.delta"


@dataclass
class Ledger:
    """Accountant history, and the budget and plan pinned at first use (a server cannot change them later)."""

    history: list[tuple[float, float, int]] = field(default_factory=list)
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    rounds: int = 0
    batch_size: int | None = None
    local_steps: int | None = None

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

    def pin_plan(self, privacy: PrivacyConfig) -> PrivacyConfig:
        """The round's batch size, steps and noise multiplier, fixed at the first private round.

        The accountants compose a (sigma, q, steps) sequence fixed in advance; a server that could
        change them between rounds would choose them after seeing earlier updates.
        """
        if self.batch_size is None or self.local_steps is None:
            self.batch_size, self.local_steps = privacy.batch_size, privacy.local_steps
        noise = privacy.noise_multiplier if self.noise_multiplier is None else self.noise_multiplier
        # 'auto' (None) asks for no particular noise, so only an explicit other value is a change.
        if (privacy.batch_size, privacy.local_steps) != (self.batch_size, self.local_steps) or privacy.noise_multiplier not in (None, noise):
            log.warning("fedsafe: DP batch size, local steps or noise changed after training began; keeping "
                        "batch size %d, %d local steps, noise %s", self.batch_size, self.local_steps, noise)
        return replace(privacy, batch_size=self.batch_size, local_steps=self.local_steps, noise_multiplier=noise)

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

        return ConfigRecord(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists, ints, floats): the ConfigRecord's and the device file's content."""
        values: dict[str, Any] = {
            "sigmas": [float(s) for s, _, _ in self.history],
            "sample-rates": [float(q) for _, q, _ in self.history],
            "steps": [int(n) for _, _, n in self.history],
            "rounds": int(self.rounds),
        }
        for name in ("epsilon", "delta", "noise_multiplier"):
            if getattr(self, name) is not None:
                values[name.replace("_", "-")] = float(getattr(self, name))
        for name in ("batch_size", "local_steps"):
            if getattr(self, name) is not None:
                values[name.replace("_", "-")] = int(getattr(self, name))
        return values

    @classmethod
    def from_record(cls, record: Any) -> Ledger:
        """Inverse of `to_record` / `as_dict`."""
        history = list(zip(
            [float(s) for s in record["sigmas"]],
            [float(q) for q in record["sample-rates"]],
            [int(n) for n in record["steps"]],
            strict=True,
        ))
        opt: dict[str, Any] = {k: kind(record[k.replace("_", "-")]) for kind, names in
                               ((float, ("epsilon", "delta", "noise_multiplier")), (int, ("batch_size", "local_steps")))
                               for k in names if k.replace("_", "-") in record}
        return cls(history=history, rounds=int(record["rounds"]), **opt)

    @classmethod
    def load(cls, state: Any) -> Ledger:
        """The ledger kept in `context.state` (a fresh one if there is none yet)."""
        record = state.config_records.get(STATE_KEY)
        return cls() if record is None else cls.from_record(record)

    def save(self, state: Any) -> None:
        """Write the ledger into `context.state`."""
        state[STATE_KEY] = self.to_record()


def _read_file(path: Path) -> Ledger | None:
    if not path.exists():
        return None
    try:
        return Ledger.from_record(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # never restart a budget silently
        raise BudgetError(f"device ledger {path} ({DEVICE_LEDGER_KEY}) is unreadable: {exc}; "
                          "fix or restore it (deleting it would reset this device's privacy budget)") from exc


def load_device_ledger(path: str | None, state: Any) -> None:
    """Put the device file's ledger into `state`: the file, written before each update left, is the truth."""
    on_file = _read_file(Path(path)) if path else None
    if on_file is not None:
        on_file.save(state)


@contextmanager
def device_ledger(path: str | None, state: Any) -> Iterator[None]:
    """Hold the device's ledger file for one private round: file -> `state` before, `state` -> file after.

    Flower gives every run a fresh `context.state`, so without this file a new run (or a restarted
    SuperNode) starts the budget at zero. An exclusive lock serialises concurrent runs on the
    device; the new ledger replaces the file atomically before the update can leave.
    """
    if not path:
        yield
        return
    try:
        import fcntl  # POSIX only; imported here so the package still imports elsewhere
    except ImportError as exc:
        raise BudgetError(f"{DEVICE_LEDGER_KEY} needs a POSIX system (file locks through fcntl)") from exc
    target = Path(path)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        load_device_ledger(path, state)
        yield
        if STATE_KEY not in state.config_records:  # a refused first round: nothing spent, nothing pinned
            return
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as out:
            json.dump(Ledger.load(state).as_dict(), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        folder = os.open(target.parent, os.O_RDONLY)  # make the rename itself survive a power loss
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
