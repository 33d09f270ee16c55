"""The on-device sanitizer: score local records, rewrite unsafe ones, count what happened.

Rules (preference pair {prompt, chosen, rejected}):
- chosen unsafe -> chosen := a refusal template, rejected := the unsafe chosen text. The old
  rejected is discarded: the pair now teaches "refuse rather than comply", which is the signal
  FedDetox wants. This holds whether the old rejected was a refusal, safe, or unsafe too (both
  unsafe: the chosen's unsafe text becomes the rejected one).
- chosen safe -> unchanged (a pair whose rejected alone is unsafe is already a safety signal).
SFT record {prompt, response}: unsafe response -> a refusal template.
Action `drop` removes unsafe records; `flag` keeps them as they are and adds `fedsafe_unsafe`
(a local field; it never leaves the device). Extra keys are preserved.
The audit holds counts only: never text, never a per-sample score. A record's `category` is
counted under its name only when it is in AUDIT_CATEGORIES, else under `unsafe.other`: the field
is free text and may hold anything (a name, a diagnosis), so it never becomes a metric key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedsafe_plugin.sanitize.encoder import SCORE_BATCH
from fedsafe_plugin.sanitize.refusals import choose_refusal

if TYPE_CHECKING:
    from fedsafe_plugin.config import SanitizeConfig

ACTIONS = ("replace", "drop", "flag")
AUDIT_KEYS = ("records", "unsafe", "replaced", "dropped", "flagged", "both_unsafe", "rejected_unsafe")
FLAG_KEY = "fedsafe_unsafe"
# Categories an audit counts by name (`unsafe.<name>`): JailbreakBench's ten (OpenAI's usage
# policies) and HarmBench's six semantic ones, as used in ../shared/data. A record's category is
# compared after lower-casing and turning every run of other characters into "_"
# ("Malware/Hacking" -> malware_hacking); any other value is counted as `unsafe.other`.
AUDIT_CATEGORIES = frozenset({
    "harassment_discrimination", "malware_hacking", "physical_harm", "economic_harm", "fraud_deception",
    "disinformation", "sexual_adult_content", "privacy", "expert_advice", "government_decision_making",
    "chemical_biological", "cybercrime_intrusion", "illegal", "misinformation_disinformation",
    "harassment_bullying", "copyright",
})


@dataclass
class SanitizeResult:
    """Sanitized records (same order, minus dropped ones) and the aggregate audit counts."""

    records: list[dict]
    audit: dict[str, int] = field(default_factory=dict)


def fingerprint(records: Sequence[dict], cfg: SanitizeConfig) -> str:
    """The cache key of one sanitization: sha256 of the settings, the student's files and the records,
    so new data, new settings or a student retrained at the same path all miss the cache."""
    from fedsafe_plugin.sanitize.classifier import student_files

    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
    for path in student_files(cfg.student or None):  # a few hundred KB: hashing them costs milliseconds
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def _category_key(category: Any) -> str:
    """The audit name of a record's category: an AUDIT_CATEGORIES entry or 'other', so free text never leaves."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(category).lower()).strip("_")
    return slug if slug in AUDIT_CATEGORIES else "other"


class Sanitizer:
    """Applies the FedDetox rewriting rules with a student classifier."""

    def __init__(self, classifier: Any, action: str = "replace", threshold: float | None = None, seed: int = 0) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        self.classifier, self.action, self.seed = classifier, action, seed
        self.threshold = float(classifier.threshold if threshold is None else threshold)

    @classmethod
    def from_config(cls, cfg: Any) -> Sanitizer:
        """Build from a `SanitizeConfig` (student '' = the shipped student, threshold None = calibrated)."""
        from fedsafe_plugin.sanitize.classifier import SafetyClassifier

        return cls(SafetyClassifier.load(cfg.student or None), cfg.action, cfg.threshold, cfg.seed)

    def sanitize(self, records: Sequence[dict], batch_size: int = SCORE_BATCH) -> SanitizeResult:
        """Score every response in one batched pass, then apply the rules record by record."""
        kinds = [_kind(r, i) for i, r in enumerate(records)]
        prompts, responses, where = [], [], []
        for i, (r, kind) in enumerate(zip(records, kinds)):
            for key in ("chosen", "rejected") if kind == "pair" else ("response",):
                prompts.append(str(r["prompt"]))
                responses.append(str(r[key]))
                where.append((i, key))
        scores = self.classifier.score(prompts, responses, batch_size=batch_size) if prompts else []
        unsafe = {w: bool(s >= self.threshold) for w, s in zip(where, scores)}

        counts: Counter[str] = Counter({k: 0 for k in AUDIT_KEYS})
        out: list[dict] = []
        for i, (r, kind) in enumerate(zip(records, kinds)):
            counts["records"] += 1
            main = "chosen" if kind == "pair" else "response"
            bad = unsafe[(i, main)]
            if kind == "pair":
                counts["rejected_unsafe"] += unsafe[(i, "rejected")] and not bad
                counts["both_unsafe"] += unsafe[(i, "rejected")] and bad
            if bad:
                counts["unsafe"] += 1
                if "category" in r and r["category"] is not None:
                    counts[f"unsafe.{_category_key(r['category'])}"] += 1
            if not bad:
                out.append(dict(r, **{FLAG_KEY: False}) if self.action == "flag" else dict(r))
            elif self.action == "drop":
                counts["dropped"] += 1
            elif self.action == "flag":
                counts["flagged"] += 1
                out.append(dict(r, **{FLAG_KEY: True}))
            else:
                counts["replaced"] += 1
                out.append(self._rewrite(r, kind))
        return SanitizeResult(out, dict(counts))

    def _rewrite(self, r: dict, kind: str) -> dict:
        refusal = choose_refusal(str(r["prompt"]), self.seed)
        if kind == "pair":
            return dict(r, chosen=refusal, rejected=r["chosen"])
        return dict(r, response=refusal)


def _kind(r: Any, index: int) -> str:
    """'pair' or 'sft'; a clear error for anything else."""
    if not isinstance(r, dict):
        raise ValueError(f"record {index}: expected a dict, got {type(r).__name__}")
    if "prompt" not in r:
        raise ValueError(f"record {index}: missing 'prompt'")
    if "chosen" in r and "rejected" in r:
        return "pair"
    if "response" in r:
        return "sft"
    raise ValueError(f"record {index}: needs 'chosen' and 'rejected' (preference pair) or 'response' (SFT)")
