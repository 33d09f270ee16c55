"""One round of local (non-private) DPO or SFT on the LoRA adapter; the DP path lives in `dp.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fedsafe_plugin.training.data import EncodedPair
from fedsafe_plugin.training.dpo import dpo_loss, pair_logps, reference_logps, sft_loss


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


def _train_steps(model: Any, num_records: int, record_loss: Callable[[list[int]], Any], settings: TrainSettings) -> dict[str, float]:
    """`settings.steps` AdamW steps on seeded random mini-batches of record indices."""
    import torch

    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    for _ in range(settings.steps):
        idx = torch.randperm(num_records, generator=generator)[: settings.batch_size]
        loss = record_loss(idx.tolist()).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"train-loss": sum(losses) / len(losses)}


def train_dpo(model: Any, pairs: Sequence[EncodedPair], settings: TrainSettings, pad_id: int) -> dict[str, float]:
    """Run `settings.steps` AdamW steps of DPO on random mini-batches; returns train metrics."""
    if not pairs:
        raise ValueError("cannot train on an empty dataset")
    model.train()
    ref = reference_logps(model, pairs, pad_id)

    def record_loss(idx: list[int]) -> Any:
        chosen, rejected = pair_logps(model, [pairs[i] for i in idx], pad_id)
        return dpo_loss(chosen, rejected, ref[idx, 0], ref[idx, 1], settings.beta)

    return _train_steps(model, len(pairs), record_loss, settings)


def train_sft(model: Any, samples: Sequence[tuple[list[int], list[int]]], settings: TrainSettings, pad_id: int) -> dict[str, float]:
    """Run `settings.steps` AdamW steps of SFT on (prompt ids, response ids) samples; returns train metrics."""
    if not samples:
        raise ValueError("cannot train on an empty dataset")
    model.train()

    def record_loss(idx: list[int]) -> Any:
        return sft_loss(model, [samples[i][0] for i in idx], [samples[i][1] for i in idx], pad_id)

    return _train_steps(model, len(samples), record_loss, settings)
