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

VAL_FRACTION = 0.2  # share of the rows `distill` holds out (stratified) to calibrate the thresholds on


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


def calibrate(
    classifier: SafetyClassifier, scores: np.ndarray, unsafe: np.ndarray, has_response: np.ndarray, recall: float
) -> list[str]:
    """Set the pair and prompt-only thresholds from held-out rows (nan in `unsafe` = unknown).

    Each is calibrated only where its rows hold an unsafe sample; returns the names of those set.
    """
    unsafe = np.asarray(unsafe, dtype=np.float64)
    done = []
    for mask, attr in ((has_response, "threshold"), (~has_response, "prompt_threshold")):
        known = mask & ~np.isnan(unsafe)
        if (unsafe[known] == 1).any():
            setattr(classifier.config, attr, calibrate_threshold(scores[known], unsafe[known] == 1, recall))
            done.append(attr)
    return done


def holdout_rows(unsafe: np.ndarray, has_response: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, stratified calibration mask: `fraction` of each (label, pair or prompt-only) group.

    A group of two or more rows gives at least one row to each side; a single row trains.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    label = np.where(np.isnan(unsafe), -1, unsafe)
    held = np.zeros(len(unsafe), dtype=bool)
    for group in sorted(set(zip(label.tolist(), has_response.tolist()))):
        rows = np.flatnonzero((label == group[0]) & (has_response == group[1]))
        k = min(max(round(fraction * len(rows)), 1), len(rows) - 1)
        held[rng.permutation(rows)[:k]] = True
    return held


@dataclass
class DistillResult:
    """What `distill` did: the loss per epoch and which rows only calibrated the thresholds."""

    history: list[float]
    calibration: np.ndarray  # bool per input row: True = used for calibration only, never trained on
    calibrated: list[str]  # the thresholds set ("threshold" for pairs, "prompt_threshold")


def distill(
    classifier: SafetyClassifier,
    prompts: Sequence[str],
    responses: Sequence[str | None] | None,
    teacher: Teacher | None = None,
    labels: np.ndarray | None = None,
    settings: DistillSettings = DistillSettings(),
    recall: float = 0.95,
    holdout: float | np.ndarray = VAL_FRACTION,
) -> DistillResult:
    """Score the data with the teacher (if any), embed it once, fit the head, calibrate thresholds.

    Thresholds are calibrated for `recall` on rows the head never trained on: `holdout` is a
    fraction of the rows held out (seeded by `settings.seed`, stratified by target and mode) or a
    bool mask of calibration rows (e.g. a separate validation file). The target is the hard
    label, else the teacher's own decision (P(unsafe) >= 0.5), separately for pairs and for
    prompt-only rows; a ValueError if no calibration row is unsafe.
    """
    teacher_logits = teacher.logits(prompts, responses) if teacher is not None else None
    target = labels if labels is not None else (teacher_logits > 0).astype(np.float64)
    has_resp = np.array([r is not None for r in responses] if responses is not None else [False] * len(prompts))
    if isinstance(holdout, np.ndarray):
        calibration = np.asarray(holdout, dtype=bool)
    else:
        calibration = holdout_rows(target, has_resp, holdout, settings.seed)
    if len(calibration) != len(prompts):
        raise ValueError(f"the calibration mask has {len(calibration)} rows for {len(prompts)} samples")
    if calibration.all():
        raise ValueError("every row is held out for calibration: nothing to train on")
    embeddings = classifier.encoder.embed(prompts, responses)
    train = ~calibration
    history = fit_head(
        classifier, embeddings[train], None if teacher_logits is None else teacher_logits[train],
        None if labels is None else labels[train], settings,
    )
    held = np.flatnonzero(calibration)
    done = calibrate(classifier, classifier.score_embeddings(embeddings[held]), target[held], has_resp[held], recall)
    if not done:
        raise ValueError(f"none of the {len(held)} calibration rows is unsafe: no threshold can be calibrated")
    return DistillResult(history, calibration, done)
