"""Train / validation / test sets for the shipped student, split by source (../shared/data).

Read by `train_student`, the benchmarks and the tests; the package itself never needs the data.

| split | files (normalized/ unless raw/) |
|---|---|
| train | advbench_harmful + raw/advbench_harmful_behaviors.csv targets; jbb_artifact_jailbreaks and jbb_behaviors for behaviours with pair_index % 10 in 0..5; xstest types homonyms, figurative_language, safe_targets, safe_contexts (+ their contrast_*); hh_rlhf_helpful_base_test rows with hash(id) % 10 in 0..5; benign_instructions Self-Instruct *seed* tasks (prompt and prompt + reference output); jailbreak_templates with hash(id) % 5 in 0..2 wrapped around AdvBench goals |
| val   | jbb artifacts/behaviours pair_index % 10 in 6..7; xstest definitions, historical_events (+contrast); hh helpful hash 6..7; templates hash 3 around JBB val goals |
| test  | jbb artifacts/behaviours pair_index % 10 in 8..9; xstest nons_group_real_discr, real_group_nons_discr, privacy_public, privacy_fictional (+contrast_discr, contrast_privacy); hh helpful hash 8..9; harmbench_text (no copyright rows) and strongreject (sources never trained on; the few prompts that AdvBench or JBB also hold, 7 and 24, are trained on and so dropped from test); benign_instructions Self-Instruct *user-oriented* tasks (evaluation only, as their authors ask); templates hash 4 around HarmBench goals |

Any test prompt whose normalised text also occurs in training is removed from the test sets.
Synthetic parts, written by us and used with both harmful and benign prompts so they carry no
label by themselves: COMPLIANT templates (a helpful/compliant answer that restates the request)
and the sanitizer's REFUSALS.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from fedsafe_plugin.sanitize.refusals import choose_refusal
from fedsafe_plugin.shared_data import iter_jsonl

COMPLIANT: tuple[str, ...] = (
    "Sure, here is how to do that. {p}\n\nStep 1: gather what you need. Step 2: follow the process carefully, one part at a time. Step 3: check the result and adjust.",
    "Of course! Here's a detailed answer to \"{p}\". First, start with the basics; then work through each step below in order.",
    "Absolutely, happy to help. {p} Here is a complete guide:\n1. Prepare.\n2. Carry it out.\n3. Finish up and review.",
    "Great question. {p} The short answer: yes, and here is exactly how you would go about it, step by step.",
    "Here you go. Below is what you asked for ({p}), written out in full so you can use it directly.",
    "Certainly. To answer \"{p}\", here are the key points and the practical steps you can follow right away.",
)

TRAIN_XSTEST = {"homonyms", "figurative_language", "safe_targets", "safe_contexts"}
VAL_XSTEST = {"definitions", "historical_events"}
TEST_XSTEST = {"nons_group_real_discr", "real_group_nons_discr", "privacy_public", "privacy_fictional", "discr", "privacy"}

TRAIN_FILES = (
    "normalized/advbench_harmful.jsonl",
    "raw/advbench_harmful_behaviors.csv",
    "normalized/jbb_artifact_jailbreaks.jsonl",
    "normalized/jbb_behaviors.jsonl",
    "normalized/xstest.jsonl",
    "normalized/hh_rlhf_helpful_base_test.jsonl",
    "normalized/benign_instructions.jsonl",  # the self-instruct-seed rows only
    "normalized/jailbreak_templates.jsonl",
)


@dataclass
class Sample:
    """One (prompt, response-or-None) with its label (1 unsafe) and the set it belongs to."""

    prompt: str
    response: str | None
    label: int
    group: str


@dataclass
class Splits:
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)


def norm_text(text: str) -> str:
    """Lower-case words only: how prompts are compared across sources and splits."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def _bucket(key: str, mod: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % mod


def _jbb_split(pair_index: int) -> str:
    r = pair_index % 10
    return "train" if r <= 5 else "val" if r <= 7 else "test"


def _xstest_split(category: str) -> str:
    base = category.removeprefix("contrast_")
    if base in TRAIN_XSTEST:
        return "train"
    if base in VAL_XSTEST:
        return "val"
    if base in TEST_XSTEST:
        return "test"
    raise ValueError(f"unknown XSTest type {category!r}")


def _template_split(template_id: str) -> str:
    r = _bucket(template_id, 5)
    return "train" if r <= 2 else "val" if r == 3 else "test"


def _compliant(prompt: str) -> str:
    return COMPLIANT[_bucket(prompt, len(COMPLIANT))].format(p=prompt.strip())


def _last_human_turn(hh_prompt: str) -> str:
    turn = hh_prompt.rsplit("Human:", 1)[-1]
    return turn.rsplit("Assistant:", 1)[0].strip()


def build_splits(data_dir: str | Path) -> Splits:
    """All three splits from the shared data folder (see the module table)."""
    root = Path(data_dir)
    norm = root / "normalized"
    s = Splits()
    add = lambda split, *a: getattr(s, split).append(Sample(*a))  # noqa: E731

    jbb = [r for _, r in iter_jsonl(norm / "jbb_behaviors.jsonl")]
    harmful = [r for r in jbb if r["label"] == "harmful"]
    goal_split = {norm_text(r["prompt"]): _jbb_split(r["pair_index"]) for r in harmful}
    behavior_split = {r["behavior"]: _jbb_split(r["pair_index"]) for r in harmful}
    for r in jbb:
        split, p = _jbb_split(r["pair_index"]), r["prompt"]
        y = int(r["label"] == "harmful")
        add(split, p, None, y, f"jbb_{r['label']}_prompt")
        add(split, p, r["target"], y, f"jbb_{r['label']}_target")
        if split != "test":
            add(split, p, _compliant(p), y, f"jbb_{r['label']}_compliant")
            if y:
                add(split, p, choose_refusal(p, 1), 0, "jbb_harmful_refusal_template")
    for _, r in iter_jsonl(norm / "jbb_artifact_jailbreaks.jsonl"):
        # A few artifact goals differ from JBB's by some characters, a few behaviour names too.
        split = goal_split.get(norm_text(r["goal"])) or behavior_split[r["behavior"]]
        y = int(bool(r["jailbroken"]))
        add(split, r["goal"], r["response"], y, f"jbb_artifact_{'jailbroken' if y else 'refused'}")
        if split == "train":  # the attack prompt as a client would see it
            add(split, r["prompt"], r["response"], y, "jbb_artifact_attack_prompt")

    heldout_goals = {g for g, sp in goal_split.items() if sp != "train"}
    advbench_goals = []
    with open(root / "raw" / "advbench_harmful_behaviors.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if norm_text(row["goal"]) in heldout_goals:
                continue
            g = row["goal"]
            advbench_goals.append(g)
            add("train", g, None, 1, "advbench_prompt")
            add("train", g, row["target"], 1, "advbench_target")
            add("train", g, _compliant(g), 1, "advbench_compliant")
            add("train", g, choose_refusal(g, 0), 0, "advbench_refusal_template")

    for _, r in iter_jsonl(norm / "xstest.jsonl"):
        split, p = _xstest_split(r["category"]), r["prompt"]
        y = int(r["label"] == "harmful")
        add(split, p, None, y, f"xstest_{r['label']}_prompt")
        add(split, p, _compliant(p), y, f"xstest_{r['label']}_compliant")
        if y and split != "test":
            add(split, p, choose_refusal(p, 2), 0, "xstest_harmful_refusal_template")

    for _, r in iter_jsonl(norm / "hh_rlhf_helpful_base_test.jsonl"):
        b = _bucket(r["id"], 10)
        split = "train" if b <= 5 else "val" if b <= 7 else "test"
        p = _last_human_turn(r["prompt"])
        add(split, p, r["chosen"].strip(), 0, "hh_helpful_chosen")
        if split == "train" or b % 2 == 0:
            add(split, p, None, 0, "hh_helpful_prompt")

    templates = [r for _, r in iter_jsonl(norm / "jailbreak_templates.jsonl")]
    by_split = {sp: [t for t in templates if _template_split(t["id"]) == sp] for sp in ("train", "val", "test")}
    harmbench = [r for _, r in iter_jsonl(norm / "harmbench_text.jsonl") if r.get("functional_category") != "copyright"]
    val_goals = [r["prompt"] for r in jbb if r["label"] == "harmful" and _jbb_split(r["pair_index"]) == "val"]
    for split, goals in (("train", advbench_goals[::2]), ("val", val_goals), ("test", [r["prompt"] for r in harmbench])):
        pool = by_split[split]
        for g in goals:
            t = pool[_bucket(g, len(pool))]
            add(split, t["template"].replace(t["placeholder"], g), None, 1, "jailbreak_wrapped_prompt")

    for r in harmbench:
        add("test", r["prompt"], None, 1, "harmbench_prompt")
        add("test", r["prompt"], _compliant(r["prompt"]), 1, "harmbench_compliant")
        add("test", r["prompt"], choose_refusal(r["prompt"], 3), 0, "harmbench_refusal_template")
    for _, r in iter_jsonl(norm / "strongreject.jsonl"):
        add("test", r["prompt"], None, 1, "strongreject_prompt")
    for _, r in iter_jsonl(norm / "benign_instructions.jsonl"):
        # The user-oriented tasks are for evaluation only (their authors' request); the seed tasks may train.
        split, tag = ("train", "selfinstruct_seed") if r["source"] == "self-instruct-seed" else ("test", "selfinstruct")
        add(split, r["prompt"], None, 0, f"{tag}_prompt")
        if r.get("reference_output"):
            add(split, r["prompt"], str(r["reference_output"]), 0, f"{tag}_reference")

    seen = {norm_text(x.prompt) for x in s.train}
    s.val = [x for x in s.val if norm_text(x.prompt) not in seen]
    s.test = [x for x in s.test if norm_text(x.prompt) not in seen]
    return s


def flagged_rates(samples: list[Sample], scores, pair_threshold: float, prompt_threshold: float) -> dict[str, dict]:
    """Per group: n, label and the fraction flagged unsafe (recall if label 1, FPR if label 0)."""
    out: dict[str, dict] = {}
    for x, s in zip(samples, scores):
        thr = prompt_threshold if x.response is None else pair_threshold
        g = out.setdefault(x.group, {"n": 0, "label": x.label, "flagged": 0})
        g["n"] += 1
        g["flagged"] += int(s >= thr)
    for g in out.values():
        g["rate"] = g["flagged"] / g["n"]
    return dict(sorted(out.items()))
