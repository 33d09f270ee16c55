"""One round of local (non-private) DPO on the LoRA adapter; the DP path lives in `dp.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedsafe_plugin.training.data import EncodedPair
from fedsafe_plugin.training.dpo import dpo_loss, pair_logps, reference_logps


@dataclass(frozen=True)
class TrainSettings:
    """Local optimisation settings for one round."""

    steps: int = 10
    batch_size: int = 8
    lr: float = 5e-3
    beta: float = 0.1
    max_length: int = 128
    seed: int = 0


def trainable_parameters(model: Any) -> list[Any]:
    """The parameters that train (the LoRA adapter's)."""
    return [p for p in model.parameters() if p.requires_grad]


def train_dpo(model: Any, pairs: Sequence[EncodedPair], settings: TrainSettings, pad_id: int) -> dict[str, float]:
    """Run `settings.steps` AdamW steps of DPO on random mini-batches; returns train metrics."""
    import torch

    if not pairs:
        raise ValueError("cannot train on an empty dataset")
    model.train()
    ref = reference_logps(model, pairs, pad_id)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    for _ in range(settings.steps):
        idx = torch.randperm(len(pairs), generator=generator)[: settings.batch_size]
        chosen, rejected = pair_logps(model, [pairs[i] for i in idx.tolist()], pad_id)
        loss = dpo_loss(chosen, rejected, ref[idx, 0], ref[idx, 1], settings.beta).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"train-loss": sum(losses) / len(losses)}
