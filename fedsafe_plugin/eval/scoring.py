"""Batched scoring of contrasts under any causal LM: summed log-probs and token counts per response.

Sequences are sorted by length before batching (less padding), right-padded with no attention
mask (causal models never attend to trailing pads), and log-probabilities are taken on response
tokens only, through the same encoding the trainer uses (`training.data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedsafe_plugin.eval.metrics import ContrastScore
from fedsafe_plugin.training.data import collate, encode_prompt, encode_response, fit_pair, pad_id
from fedsafe_plugin.training.dpo import sequence_logps


def model_max_length(model: Any, requested: int) -> int:
    """`requested`, capped by the model's position limit when it has one."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(requested, int(limit)) if limit else requested


def score_responses(
    model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
    batch_size: int = 16, max_length: int = 256, progress: Any = None,
) -> list[tuple[float, int]]:
    """(summed log p(response | prompt), response tokens) per pair, in input order."""
    import torch

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    max_length = model_max_length(model, max_length)
    encoded = [
        fit_pair(encode_prompt(tokenizer, p), encode_response(tokenizer, r), max_length)
        for p, r in zip(prompts, responses, strict=True)
    ]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    pad = pad_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = collate([encoded[i][0] for i in idx], [encoded[i][1] for i in idx], pad)
                logps = sequence_logps(model, ids, mask).tolist()
                for row, i in enumerate(idx):
                    out[i] = (float(logps[row]), len(encoded[i][1]))
                if progress is not None:
                    progress.update(len(idx))
    finally:
        model.train(was_training)
    return out


def score_contrasts(
    model: Any, tokenizer: Any, contrasts: Sequence[Any], batch_size: int = 16,
    max_length: int = 256, progress: Any = None,
) -> list[ContrastScore]:
    """Score the good and the bad response of every contrast (objects with prompt/good/bad)."""
    prompts = [c.prompt for c in contrasts]
    scored = score_responses(
        model, tokenizer, prompts + prompts, [c.good for c in contrasts] + [c.bad for c in contrasts],
        batch_size, max_length, progress,
    )
    n = len(contrasts)
    return [ContrastScore(g[0], g[1], b[0], b[1]) for g, b in zip(scored[:n], scored[n:], strict=True)]


def preference_accuracy(model: Any, tokenizer: Any, records: Sequence[dict], batch_size: int = 16) -> float:
    """Fraction of {prompt, chosen, rejected} records whose `chosen` gets the higher per-token log-prob."""
    from fedsafe_plugin.eval.suites import Contrast

    if not records:
        raise ValueError("no records to score")
    contrasts = [Contrast(r["prompt"], r["chosen"], r["rejected"]) for r in records]
    scores = score_contrasts(model, tokenizer, contrasts, batch_size)
    return sum(not s.prefers_bad for s in scores) / len(scores)
