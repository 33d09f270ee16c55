"""Score responses under a model: length-normalised log-probabilities and preference accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedsafe_plugin.training.data import collate, encode_prompt, encode_response
from fedsafe_plugin.training.dpo import sequence_logps


def response_logps(
    model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
    batch_size: int = 16, max_length: int = 256,
) -> list[float]:
    """Mean per-token log p(response | prompt); the mean keeps long and short answers comparable."""
    import torch

    out: list[float] = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            p = [encode_prompt(tokenizer, x)[-max_length // 2 :] for x in prompts[i : i + batch_size]]
            r = [encode_response(tokenizer, x)[: max_length // 2] for x in responses[i : i + batch_size]]
            out += sequence_logps(model, *collate(p, r, tokenizer.pad_token_id), average=True).tolist()
    return out


def preference_accuracy(model: Any, tokenizer: Any, records: Sequence[dict]) -> float:
    """Fraction of {prompt, chosen, rejected} records where the model prefers `chosen`."""
    if not records:
        raise ValueError("no records to score")
    prompts = [r["prompt"] for r in records]
    chosen = response_logps(model, tokenizer, prompts, [r["chosen"] for r in records])
    rejected = response_logps(model, tokenizer, prompts, [r["rejected"] for r in records])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(records)
