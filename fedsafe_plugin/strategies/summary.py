"""Per-round summary of fedsafe replies, shared by the Message-API and legacy wrappers."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from fedsafe_plugin.config import PREFIX
from fedsafe_plugin.privacy.accounting import EPSILON


@dataclass
class RoundSummary:
    """What happened to one round's replies, and the clients' fedsafe metrics combined."""

    server_round: int
    received: int = 0
    kept: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    exhausted: list[int] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=dict)
    epsilons: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        """Flat numbers for Flower's MetricRecord / Result history."""
        out = {"fedsafe.replies": self.received, "fedsafe.kept": len(self.kept),
               "fedsafe.dropped": len(self.dropped), "fedsafe.exhausted": len(self.exhausted)}
        out.update(self.counts)
        if self.epsilons:
            out.update({"fedsafe.dp.epsilon-min": min(self.epsilons),
                        "fedsafe.dp.epsilon-mean": mean(self.epsilons),
                        "fedsafe.dp.epsilon-max": max(self.epsilons)})
        return {**out, **self.extra}

    def describe(self) -> str:
        """One log line."""
        parts = [f"kept {len(self.kept)}/{self.received} replies"]
        parts += [f"dropped node {n}: {why}" for n, why in self.dropped.items()]
        if self.exhausted:
            parts.append(f"budget exhausted on {len(self.exhausted)} node(s)")
        parts += [f"{k.removeprefix(PREFIX)}={v:g}" for k, v in sorted({**self.counts, **self.extra}.items())]
        if self.epsilons:
            parts.append(f"epsilon min/mean/max {min(self.epsilons):.3f}/{mean(self.epsilons):.3f}/{max(self.epsilons):.3f}")
        return f"fedsafe round {self.server_round}: " + "; ".join(parts)

    def collect(self, metrics: MutableMapping[str, Any]) -> None:
        """Move a reply's `fedsafe.*` metrics into the summary (the wrapped strategy never sees them)."""
        for key in [k for k in metrics if k.startswith(PREFIX)]:
            value = float(metrics.pop(key))
            if key == EPSILON:
                self.epsilons.append(value)
            elif not key.startswith("fedsafe.dp."):
                self.counts[key] = self.counts.get(key, 0.0) + value

