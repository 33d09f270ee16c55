"""Tokenise preference pairs and SFT samples the same way for training and evaluation.

Prompts go through the tokenizer's chat template when it has one (any HF instruct model, or the
tiny model's), responses end with EOS. Batches are right-padded with no attention mask: causal
models never attend to trailing pads, and per-sample DP machinery stays simple.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one preference record: prompt, chosen and rejected completions."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids, through the chat template (with the generation prompt) when there is one."""
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True
        )
        return list(out["input_ids"] if hasattr(out, "keys") else out)
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Completion ids followed by EOS, so training teaches the model to stop."""
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def fit_pair(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Keep the prompt's end and the response's start within max_length tokens."""
    response = response[: max(1, max_length // 2)] if len(prompt) + len(response) > max_length else response
    keep = max_length - len(response)
    return prompt[-keep:] if keep > 0 else [], response


def encode_pairs(tokenizer: Any, records: Sequence[dict], max_length: int = 128) -> list[EncodedPair]:
    """Encode {prompt, chosen, rejected} records, truncated to max_length per sequence."""
    out = []
    for rec in records:
        p = encode_prompt(tokenizer, rec["prompt"])
        pc, c = fit_pair(p, encode_response(tokenizer, rec["chosen"]), max_length)
        pr, r = fit_pair(p, encode_response(tokenizer, rec["rejected"]), max_length)
        prompt = pc if len(pc) <= len(pr) else pr
        out.append(EncodedPair(prompt, c, r))
    return out


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, or its EOS id when it has no pad token (most causal LMs)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def collate(prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int):
    """Right-padded (input_ids, loss_mask); loss_mask marks the response tokens."""
    import torch

    if pad_id is None:
        raise ValueError("pad_id is None: the tokenizer has no pad token; pass "
                         "fedsafe_plugin.training.data.pad_id(tokenizer), which falls back to its EOS id")
    seqs = [p + r for p, r in zip(prompts, responses, strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        mask[i, len(p) : len(p) + len(r)] = True
    return ids, mask
