"""DP-SGD on the LoRA adapter with Opacus: per-record clipping, Gaussian noise, Poisson sampling.

The privacy unit is one training record; for DPO one record is a whole preference pair. Chosen
and rejected run as two forward passes over the same rows; Opacus's hook mode sums each row's
per-sample gradient over both passes (`_forward_counter`), so the clipped unit is the pair's
gradient. `train_dpo_private` / `train_sft_private` run one federated round on top of
`make_private` and keep the accountant in `context.state` so epsilon composes across rounds.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fedsafe_plugin.config import PrivacyConfig
from fedsafe_plugin.devices import model_device
from fedsafe_plugin.privacy.accounting import DELTA, EPSILON, EXHAUSTED, NOISE, Ledger
from fedsafe_plugin.privacy.budget import Budget, BudgetError, Plan, epsilon_of, noise_multiplier_for, sample_rate_for
from fedsafe_plugin.training.data import EncodedPair
from fedsafe_plugin.training.dpo import dpo_loss, pair_logps, reference_logps, sft_loss
from fedsafe_plugin.training.local import TrainSettings, trainable_parameters



def _entropy_generator(seed: int | None = None, device: Any = "cpu") -> Any:
    """A torch generator on `device`, seeded from the OS (or `seed`, for tests): noise must not be predictable."""
    import torch

    return torch.Generator(device=device).manual_seed(secrets.randbits(63) if seed is None else seed)


@dataclass
class PrivateTraining:
    """Opacus's wrapped model, DP optimizer and Poisson loader, with the budget they spend."""

    model: Any
    optimizer: Any
    data_loader: Any
    engine: Any
    budget: Budget
    noise_multiplier: float
    sample_rate: float

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The Opacus accountant history [(sigma, q, steps), ...] including past rounds."""
        return list(self.engine.accountant.history)

    def epsilon(self) -> float:
        """Epsilon spent so far, past rounds included, at the budget's delta."""
        return epsilon_of(self.history, self.budget.delta, self.budget.accountant)

    def step_empty(self) -> None:
        """A DP step for an empty Poisson batch: no gradient, but noise is added and accounted."""
        import torch

        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.step()

    def close(self) -> None:
        """Remove Opacus's hooks so the underlying model trains (or is wrapped) normally again."""
        self.model.cleanup()

    def __enter__(self) -> PrivateTraining:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_private(
    model: Any,
    optimizer: Any,
    data_loader: Any,
    budget: Budget,
    *,
    plan: Plan | None = None,
    history: Iterable[tuple[float, float, int]] = (),
    noise_seed: int | None = None,
    sample_seed: int | None = None,
) -> PrivateTraining:
    """Wrap (model, optimizer, loader) with Opacus (hook mode, Poisson sampling) for `budget`.

    The sample rate is Opacus's 1/len(data_loader). With no noise multiplier in the budget it is
    derived so `plan` (default: one epoch) fits epsilon. `history` resumes an earlier accountant;
    then `plan.local_steps` more steps must fit epsilon, or BudgetError (nothing is wrapped).
    Noise and sampling use OS-seeded generators unless seeds are given (tests only).
    """
    from opacus import PrivacyEngine

    sample_rate = 1.0 / len(data_loader)
    budget.check_dataset(len(data_loader.dataset))
    plan = plan if plan is not None else Plan(1, len(data_loader), sample_rate)
    if not math.isclose(plan.sample_rate, sample_rate, rel_tol=1e-12):
        raise BudgetError(f"plan sample rate {plan.sample_rate:g} != the loader's 1/len(loader) = {sample_rate:g}")
    sigma = noise_multiplier_for(budget, plan)
    history = list(history)
    if history:  # sigma fits the plan alone; the history resumed here has spent part of the budget
        exceed, after = Ledger(history=history).preview(budget, sigma, sample_rate, plan.local_steps)
        if exceed:
            raise BudgetError(f"{plan.local_steps} more steps at noise {sigma:g} after this history reach epsilon "
                              f"{after:.4g} > budget {budget.epsilon:g}")
    engine = PrivacyEngine(accountant=budget.accountant)
    engine.accountant.history = history
    module, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=data_loader,
        noise_multiplier=sigma,
        max_grad_norm=budget.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode="hooks",
        # Opacus draws the noise on the parameters' device, which needs a generator there too.
        noise_generator=_entropy_generator(noise_seed, model_device(model)),
    )
    # Opacus hands its accountant 1/len(dp_loader) = 1/int(1/q), which float rounding makes
    # 1/(k-1) for some k (k = 93 first): account at the rate the sampler really draws, as planned.
    dp_optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    # Opacus seeds Poisson sampling only in secure mode (torchcsprng); otherwise it would use
    # torch's global RNG, which any `torch.manual_seed` in the app makes predictable.
    dp_loader.batch_sampler.generator = _entropy_generator(sample_seed)
    return PrivateTraining(module, dp_optimizer, dp_loader, engine, replace(budget, noise_multiplier=sigma), sigma, sample_rate)


@dataclass(frozen=True)
class PrivateRoundResult:
    """One private round: reply metrics (`fedsafe.dp.*`, `train-loss`) and whether the budget is spent."""

    metrics: dict[str, float]
    exhausted: bool


RecordLoss = Callable[[Any, list[int]], Any]


def _private_round(
    model: Any,
    num_records: int,
    record_loss: RecordLoss,
    settings: TrainSettings,
    privacy: PrivacyConfig,
    state: Any,
    noise_seed: int | None,
) -> PrivateRoundResult:
    """Check the budget, then run `privacy.local_steps` DP-SGD steps; the ledger goes to `state`."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    ledger = Ledger.load(state)
    budget = ledger.pin(Budget.from_config(privacy))
    privacy = ledger.pin_plan(privacy)
    budget.check_dataset(num_records)
    sample_rate = sample_rate_for(num_records, privacy.batch_size)
    plan = Plan(privacy.rounds, privacy.local_steps, sample_rate)
    sigma = privacy.noise_multiplier if privacy.noise_multiplier is not None else noise_multiplier_for(budget, plan)
    ledger.noise_multiplier = sigma
    base = {NOISE: float(sigma), DELTA: float(budget.delta)}
    exceed, after = ledger.preview(budget, sigma, sample_rate, plan.local_steps)
    if exceed:
        if ledger.history:  # a refused first round pins nothing: a later config may still fit the budget
            ledger.save(state)
        return PrivateRoundResult({**base, EPSILON: ledger.spent(budget.accountant), EXHAUSTED: 1.0}, True)

    model.train()
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=settings.lr)
    loader = DataLoader(TensorDataset(torch.arange(num_records)), batch_size=privacy.batch_size)
    dp = make_private(model, optimizer, loader, replace(budget, noise_multiplier=sigma), plan=plan,
                      history=ledger.history, noise_seed=noise_seed,
                      sample_seed=None if noise_seed is None else noise_seed + 1)
    losses = []
    with dp, warnings.catch_warnings():
        # Opacus's hooks on the first LoRA layer trip this harmless PyTorch notice every step.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        batches = iter(dp.data_loader)
        for _ in range(plan.local_steps):
            try:
                (idx,) = next(batches)
            except StopIteration:
                batches = iter(dp.data_loader)
                (idx,) = next(batches)
            dp.optimizer.zero_grad()
            if len(idx) == 0:
                dp.step_empty()
                continue
            loss = record_loss(dp.model, idx.tolist()).mean()
            loss.backward()
            dp.optimizer.step()
            losses.append(float(loss.detach()))
        dp.optimizer.zero_grad()
    projected = ledger.projected(sigma, sample_rate, plan.local_steps)
    ledger.history, ledger.rounds = dp.history, ledger.rounds + 1
    ledger.save(state)
    if ledger.history != projected:  # the previewed epsilon is only true for the previewed steps
        raise BudgetError(f"the accountant recorded {ledger.history[-1:]} but the round was planned as "
                          f"{projected[-1:]}; update not sent")
    metrics = {**base, EPSILON: after, EXHAUSTED: 0.0}
    if losses:
        metrics["train-loss"] = sum(losses) / len(losses)
    return PrivateRoundResult(metrics, False)


def train_dpo_private(
    model: Any,
    pairs: Sequence[EncodedPair],
    settings: TrainSettings,
    privacy: PrivacyConfig,
    state: Any,
    pad_id: int,
    *,
    noise_seed: int | None = None,
) -> PrivateRoundResult:
    """One round of DP-SGD DPO on the adapter (privacy unit: one pair), within the budget.

    Steps and expected batch come from the plan (`privacy.local_steps`, `privacy.batch_size`);
    `settings` gives lr and beta. If the round would exceed epsilon it does not train.
    """
    if not pairs:
        raise BudgetError("cannot train with DP on an empty dataset (0 records)")
    ref = reference_logps(model, pairs, pad_id)  # before Opacus's hooks: adapter off, no grad

    def record_loss(module: Any, idx: list[int]) -> Any:
        chosen, rejected = pair_logps(module, [pairs[i] for i in idx], pad_id)
        return dpo_loss(chosen, rejected, ref[idx, 0], ref[idx, 1], settings.beta)

    return _private_round(model, len(pairs), record_loss, settings, privacy, state, noise_seed)


def train_sft_private(
    model: Any,
    samples: Sequence[tuple[list[int], list[int]]],
    settings: TrainSettings,
    privacy: PrivacyConfig,
    state: Any,
    pad_id: int,
    *,
    noise_seed: int | None = None,
) -> PrivateRoundResult:
    """One round of DP-SGD SFT on (prompt ids, response ids) samples (privacy unit: one sample)."""
    if not samples:
        raise BudgetError("cannot train with DP on an empty dataset (0 records)")

    def record_loss(module: Any, idx: list[int]) -> Any:
        return sft_loss(module, [samples[i][0] for i in idx], [samples[i][1] for i in idx], pad_id)

    return _private_round(model, len(samples), record_loss, settings, privacy, state, noise_seed)
