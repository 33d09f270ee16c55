"""DPO and SFT losses on completion tokens (the sigmoid DPO loss, same math as trl's default).

The reference model is the base with the LoRA adapter disabled; its log-probabilities do not
change during a round, so they are computed once per round and reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedsafe_plugin.devices import model_device
from fedsafe_plugin.training.data import EncodedPair, collate


def sequence_logps(model: Any, input_ids: Any, loss_mask: Any, average: bool = False) -> Any:
    """Sum (or mean) of log p(token) over the masked completion tokens of each row.

    The batch moves to the model's device, so a model the app put on a GPU trains and scores there.
    """
    import torch

    device = model_device(model)
    input_ids, loss_mask = input_ids.to(device), loss_mask.to(device)
    logits = model(input_ids=input_ids).logits[:, :-1]
    targets = input_ids[:, 1:]
    mask = loss_mask[:, 1:]
    token_logps = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def pair_logps(model: Any, pairs: Sequence[EncodedPair], pad_id: int) -> tuple[Any, Any]:
    """(chosen, rejected) summed log-probs: two forward passes, one per response, same row order.

    Two passes (not one concatenated batch) keep row i of both passes the same record, which is
    what lets Opacus accumulate one per-record gradient over chosen and rejected.
    """
    prompts = [p.prompt for p in pairs]
    chosen = sequence_logps(model, *collate(prompts, [p.chosen for p in pairs], pad_id))
    rejected = sequence_logps(model, *collate(prompts, [p.rejected for p in pairs], pad_id))
    return chosen, rejected


def reference_logps(model: Any, pairs: Sequence[EncodedPair], pad_id: int, batch_size: int = 32) -> Any:
    """Log-probs of the base model (adapter disabled), shape (n, 2): chosen, rejected."""
    import torch

    rows = []
    with torch.no_grad(), model.disable_adapter():
        for i in range(0, len(pairs), batch_size):
            c, r = pair_logps(model, pairs[i : i + batch_size], pad_id)
            rows.append(torch.stack([c, r], dim=1))
    return torch.cat(rows) if rows else torch.zeros((0, 2))


def dpo_loss(policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: float) -> Any:
    """Per-record sigmoid DPO loss: -log sigmoid(beta * (policy margin - reference margin))."""
    import torch.nn.functional as F

    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


def sft_loss(model: Any, prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int) -> Any:
    """Per-record SFT loss: mean negative log-likelihood of the response tokens."""
    return -sequence_logps(model, *collate(prompts, responses, pad_id), average=True)
