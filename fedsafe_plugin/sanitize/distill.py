"""Distil a teacher into the student head: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE.

The encoder is frozen, so embeddings are computed once and only the head trains (seconds on CPU).
A row with only a teacher logit trains on the KL term alone, a row with only a hard label on CE
alone, a row with both on the weighted sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedsafe_plugin.sanitize.classifier import SafetyClassifier
from fedsafe_plugin.sanitize.teachers import Teacher


@dataclass(frozen=True)
class DistillSettings:
    """Loss weights and optimiser settings of head distillation."""

    alpha: float = 0.5  # weight of the KL term where both a teacher and a label exist
    temperature: float = 2.0
    epochs: int = 30
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    balance: bool = True  # weight classes (by hard label or teacher decision) equally
    seed: int = 0


def _bernoulli_kl(p: torch.Tensor, q_logit: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(p) || Bernoulli(sigmoid(q_logit))) per element."""
    eps = 1e-7
    p = p.clamp(eps, 1 - eps)
    log_q, log_1mq = F.logsigmoid(q_logit), F.logsigmoid(-q_logit)
    return p * (torch.log(p) - log_q) + (1 - p) * (torch.log1p(-p) - log_1mq)


def distillation_loss(
    student_logit: torch.Tensor,
    teacher_logit: torch.Tensor,
    label: torch.Tensor,
    alpha: float,
    temperature: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over a batch; nan in `teacher_logit` / `label` marks a missing teacher / label."""
    has_t, has_y = ~torch.isnan(teacher_logit), ~torch.isnan(label)
    w_kl = torch.where(has_y, torch.full_like(label, alpha), torch.ones_like(label)) * has_t
    w_ce = torch.where(has_t, torch.full_like(label, 1 - alpha), torch.ones_like(label)) * has_y
    t = temperature
    soft = torch.sigmoid(torch.nan_to_num(teacher_logit) / t)
    kl = _bernoulli_kl(soft, student_logit / t) * t * t
    ce = F.binary_cross_entropy_with_logits(student_logit, torch.nan_to_num(label), reduction="none")
    per_row = w_kl * kl + w_ce * ce
    if weight is not None:
        per_row = per_row * weight
    return per_row.sum() / max(int((has_t | has_y).sum()), 1)


def fit_head(
    classifier: SafetyClassifier,
    embeddings: np.ndarray,
    teacher_logits: np.ndarray | None,
    labels: np.ndarray | None,
    settings: DistillSettings = DistillSettings(),
) -> list[float]:
    """Train the classifier's head on fixed embeddings; returns the mean loss per epoch."""
    n = len(embeddings)
    t_logit = torch.tensor(teacher_logits if teacher_logits is not None else np.full(n, np.nan), dtype=torch.float32)
    y = torch.tensor(labels if labels is not None else np.full(n, np.nan), dtype=torch.float32)
    if bool((torch.isnan(t_logit) & torch.isnan(y)).all()):
        raise ValueError("no teacher logits and no labels: nothing to learn from")
    x = torch.tensor(embeddings, dtype=torch.float32)
    weight = _class_weights(t_logit, y) if settings.balance else None
    g = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    head = classifier.head
    opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history = []
    head.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: extra threads only add sync cost (4x slower on 2 busy cores)
    for _ in range(settings.epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for start in range(0, n, settings.batch_size):
            idx = perm[start : start + settings.batch_size]
            loss = distillation_loss(
                head(x[idx]), t_logit[idx], y[idx], settings.alpha, settings.temperature,
                None if weight is None else weight[idx],
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / n)
    torch.set_num_threads(threads)
    head.eval()
    return history


def _class_weights(t_logit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights (mean 1) from the hard label, else the teacher's decision."""
    cls = torch.where(torch.isnan(y), (torch.nan_to_num(t_logit) > 0).float(), y)
    pos = float(cls.mean()) if len(cls) else 0.5
    if pos in (0.0, 1.0):
        return torch.ones_like(cls)
    return torch.where(cls > 0.5, 0.5 / pos, 0.5 / (1 - pos))


def calibrate_threshold(scores: np.ndarray, unsafe: np.ndarray, recall: float = 0.95) -> float:
    """The highest threshold whose recall on the unsafe samples is at least `recall`."""
    pos = np.sort(np.asarray(scores)[np.asarray(unsafe, dtype=bool)])
    if len(pos) == 0:
        raise ValueError("calibration needs at least one unsafe sample")
    k = int(np.floor((1 - recall) * len(pos) + 1e-9))  # at most k positives may fall below
    return float(np.clip(pos[k], 1e-6, 1 - 1e-6))


def distill(
    classifier: SafetyClassifier,
    prompts: Sequence[str],
    responses: Sequence[str | None] | None,
    teacher: Teacher | None = None,
    labels: np.ndarray | None = None,
    settings: DistillSettings = DistillSettings(),
    recall: float = 0.95,
) -> list[float]:
    """Score the data with the teacher (if any), embed it once, fit the head, calibrate thresholds.

    Thresholds are calibrated for `recall` on the hard labels, else on the teacher's own
    decisions (P(unsafe) >= 0.5), separately for pairs and for prompt-only rows.
    """
    teacher_logits = teacher.logits(prompts, responses) if teacher is not None else None
    embeddings = classifier.encoder.embed(prompts, responses)
    history = fit_head(classifier, embeddings, teacher_logits, labels, settings)
    target = labels if labels is not None else (teacher_logits > 0).astype(np.float64)
    scores = classifier.score_embeddings(embeddings)
    has_resp = np.array([responses is not None and r is not None for r in (responses or [None] * len(prompts))])
    for mask, attr in ((has_resp, "threshold"), (~has_resp, "prompt_threshold")):
        known = mask & ~np.isnan(target)
        if (target[known] == 1).any():
            setattr(classifier.config, attr, calibrate_threshold(scores[known], target[known] == 1, recall))
    return history
