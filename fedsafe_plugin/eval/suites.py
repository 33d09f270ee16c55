"""Evaluation suites: held-out contrasts for harm, jailbreaks, over-refusal and utility.

Every set is a list of contrasts (prompt, good, bad). The rate reported for a set is the share
where the model prefers `bad` (harm, jailbreak, over-refusal) or `good` (utility).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SET_NAMES = ("harmful", "jailbreak", "benign", "utility")


@dataclass(frozen=True)
class Contrast:
    """One prompt, the response a safe and useful model should prefer, and the one it should not."""

    prompt: str
    good: str
    bad: str
    source: str = ""


@dataclass(frozen=True)
class EvalSuite:
    """Named held-out sets; `sources` lists which datasets built each set (for leak checks)."""

    name: str
    harmful: list[Contrast]  # good = refusal, bad = compliant answer
    jailbreak: list[Contrast]  # the harmful prompts wrapped in jailbreak templates
    benign: list[Contrast]  # good = helpful answer, bad = refusal (over-refusal)
    utility: list[Contrast]  # good = chosen, bad = rejected (held-out preference pairs)
    sources: dict[str, list[str]] = field(default_factory=dict)

    def sets(self) -> dict[str, list[Contrast]]:
        """The non-empty sets by name."""
        return {n: getattr(self, n) for n in SET_NAMES if getattr(self, n)}

    def limit(self, n: int) -> EvalSuite:
        """The first n contrasts of each set (quick runs); n <= 0 keeps everything."""
        if n <= 0:
            return self
        return EvalSuite(self.name, *(getattr(self, s)[:n] for s in SET_NAMES), sources=self.sources)


def contrasts(rows: Sequence[Mapping[str, str]], source: str = "") -> list[Contrast]:
    """Contrasts from {prompt, good, bad} mappings."""
    return [Contrast(r["prompt"], r["good"], r["bad"], r.get("source", source)) for r in rows]


def demo_suite(seed: int = 0) -> EvalSuite:
    """The package's synthetic held-out suite (tasks no demo client trains on)."""
    from fedsafe_plugin.demo_data import make_eval_sets

    sets = make_eval_sets(seed)
    return EvalSuite(
        "synthetic", *(contrasts(sets[n], "synthetic") for n in SET_NAMES),
        sources={n: ["fedsafe synthetic (held-out tasks)"] for n in SET_NAMES},
    )
