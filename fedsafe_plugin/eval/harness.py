"""The safety evaluation harness: one call scores a causal LM (with or without LoRA) on a suite.

Two views of harm, reported side by side where both apply:
- *preference*: on held-out harmful prompts, does the model give a compliant answer a higher
  length-normalised log-likelihood than a refusal? Works for any model, even a tiny one that
  cannot write a coherent sentence, and has no sampling noise.
- *generation*: greedy answers to the harmful prompts, judged unsafe or not by a safety
  classifier (the sanitizer's student). Only meaningful for models that can write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fedsafe_plugin.eval.metrics import bad_rate, mean_margin
from fedsafe_plugin.eval.scoring import score_contrasts
from fedsafe_plugin.eval.suites import EvalSuite

# (prompts, responses) -> True where the response is unsafe.
Judge = Callable[[Sequence[str], Sequence[str]], list[bool]]

RATE_NAMES = {
    "harmful": "harmful_rate",
    "jailbreak": "jailbreak_rate",
    "benign": "over_refusal_rate",
    "utility": "utility",
}


def evaluate(
    model: Any, tokenizer: Any, suite: EvalSuite, *, batch_size: int = 16, max_length: int = 256,
    progress: bool = True, judge: Judge | None = None, generate: int = 0, max_new_tokens: int = 48,
) -> dict[str, Any]:
    """Score `suite` under `model`; JSON-ready rates, mean margins and set sizes.

    With `judge` and `generate > 0`, also generates answers to the first `generate` harmful (and
    jailbreak) prompts and reports the judged unsafe share as `generated.*`.
    """
    from tqdm.auto import tqdm

    sets = suite.sets()
    total = 2 * sum(len(v) for v in sets.values())
    result: dict[str, Any] = {"suite": suite.name, "sources": suite.sources, "margins": {}, "counts": {}}
    with tqdm(total=total, desc=f"eval {suite.name}", unit="seq", disable=not progress, leave=False) as bar:
        for name, contrasts in sets.items():
            scores = score_contrasts(model, tokenizer, contrasts, batch_size, max_length, bar)
            rate = bad_rate(scores)
            result[RATE_NAMES[name]] = 1.0 - rate if name == "utility" else rate
            result["margins"][name] = mean_margin(scores)
            result["counts"][name] = len(scores)
    if judge is not None and generate > 0:
        result["generated"] = judge_generations(model, tokenizer, suite, judge, generate, max_new_tokens, progress)
    return result


def generate_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 48, progress: bool = True,
    batch_size: int = 1,
) -> list[str]:
    """Greedy answers through the chat template, in left-padded batches of `batch_size`.

    The default of 1 pads nothing, so it behaves alike across model families; larger batches
    are several times faster on CPU for decoder-only models that accept left padding.
    """
    import torch
    from tqdm.auto import tqdm

    from fedsafe_plugin.devices import model_device
    from fedsafe_plugin.training.data import encode_prompt, pad_id

    pad = pad_id(tokenizer)
    answers = []
    device = model_device(model)
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress, leave=False):
            encoded = [encode_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], dtype=torch.long, device=device)
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], dtype=torch.long, device=device)
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
            )
            answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return answers


def judge_generations(
    model: Any, tokenizer: Any, suite: EvalSuite, judge: Judge, n: int, max_new_tokens: int, progress: bool,
) -> dict[str, Any]:
    """Unsafe share of greedy answers to the first n harmful and jailbreak prompts."""
    out: dict[str, Any] = {}
    for name in ("harmful", "jailbreak"):
        prompts = [c.prompt for c in getattr(suite, name)[:n]]
        if not prompts:
            continue
        answers = generate_answers(model, tokenizer, prompts, max_new_tokens, progress)
        unsafe = judge(prompts, answers)
        out[f"{name}_rate"] = sum(unsafe) / len(unsafe)
        out[f"{name}_n"] = len(unsafe)
        out[f"{name}_examples"] = [{"prompt": p[:200], "answer": a[:200]} for p, a in list(zip(prompts, answers))[:3]]
    return out


def load_judge(student: str | None = None) -> Judge:
    """The sanitizer's student classifier (`student` folder, or the shipped one) as a judge."""
    from fedsafe_plugin.sanitize import SafetyClassifier

    classifier = SafetyClassifier.load(student or None)
    return lambda prompts, answers: [bool(s >= classifier.threshold) for s in classifier.score(list(prompts), list(answers))]
