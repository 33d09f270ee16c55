"""Private rounds on the tiny model: epsilon composes across rounds and restarts, and is enforced."""

from __future__ import annotations

import pytest
import torch
from flwr.app import RecordDict
from opacus.accountants import RDPAccountant

from fedsafe_plugin.config import PrivacyConfig
from fedsafe_plugin.demo_data import make_client_pairs
from fedsafe_plugin.privacy.accounting import STATE_KEY, Ledger
from fedsafe_plugin.privacy.budget import Budget, BudgetError, Plan
from fedsafe_plugin.training.data import encode_pairs, encode_prompt, encode_response
from fedsafe_plugin.privacy.accounting import EPSILON, EXHAUSTED, NOISE
from fedsafe_plugin.training.dp import make_private, train_dpo_private, train_sft_private
from fedsafe_plugin.training.local import TrainSettings, trainable_parameters
from fedsafe_plugin.training.lora import add_lora
from fedsafe_plugin.training.tiny import TinySpec, build_tiny_model, build_tiny_tokenizer
from test_dp_budget import _restart

N, BATCH, STEPS = 12, 4, 2


@pytest.fixture(scope="module")
def tiny():
    tok = build_tiny_tokenizer()
    records = [p.as_record() for p in make_client_pairs(1, 3, N)]
    return tok, encode_pairs(tok, records, 40), records


def _model(tok):
    return add_lora(build_tiny_model(TinySpec(), tok), r=2)


def _privacy(**kw):
    base = dict(enabled=True, epsilon=2.0, delta=1e-2 / N, rounds=3, local_steps=STEPS, batch_size=BATCH,
                accountant="rdp", noise_multiplier=2.0)
    return PrivacyConfig(**{**base, **kw})


def _direct_epsilon(sigma, q, steps, delta):
    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    return acc.get_epsilon(delta)


def test_rounds_compose_across_restarts_then_stop_before_the_budget(tiny):
    tok, pairs, _ = tiny
    privacy = _privacy(epsilon=1.5)
    q = 1 / (N // BATCH)
    state, spent, trained = RecordDict(), [], 0
    for _ in range(3):
        model = _model(tok)  # a fresh process: new model, state from the wire
        state = _restart(state)
        before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        result = train_dpo_private(model, pairs, TrainSettings(), privacy, state, tok.pad_token_id, noise_seed=7)
        after = [p.detach() for p in model.parameters() if p.requires_grad]
        changed = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert result.metrics[EXHAUSTED] == float(result.exhausted)
        assert changed != result.exhausted  # an exhausted client does not train
        if not result.exhausted:
            trained += 1
            assert "train-loss" in result.metrics
        spent.append(result.metrics[EPSILON])
        assert result.metrics[EPSILON] <= privacy.epsilon
        assert result.metrics[EPSILON] == pytest.approx(
            _direct_epsilon(2.0, q, trained * STEPS, privacy.delta), rel=1e-9
        )
    assert trained == 2 and spent == sorted(spent)
    assert Ledger.load(state).rounds == trained
    # The next round would indeed have overspent: enforcement is not over-cautious.
    assert _direct_epsilon(2.0, q, (trained + 1) * STEPS, privacy.delta) > privacy.epsilon


def test_auto_noise_multiplier_is_derived_once_and_fits_the_plan(tiny):
    tok, pairs, _ = tiny
    privacy = _privacy(noise_multiplier=None, epsilon=3.0, rounds=1)
    state = RecordDict()
    sigmas, results = [], []
    for _ in range(2):
        results.append(train_dpo_private(_model(tok), pairs, TrainSettings(), privacy, state, tok.pad_token_id))
        sigmas.append(results[-1].metrics[NOISE])
    assert len(set(sigmas)) == 1
    assert [r.exhausted for r in results] == [False, True]
    assert 2.5 < results[0].metrics[EPSILON] <= 3.0  # the plan uses (nearly) the whole budget


def test_sft_variant_trains_and_accounts(tiny):
    tok, _, records = tiny
    samples = [(encode_prompt(tok, r["prompt"]), encode_response(tok, r["chosen"])[:20]) for r in records]
    state = RecordDict()
    result = train_sft_private(_model(tok), samples, TrainSettings(), _privacy(), state, tok.pad_token_id)
    assert not result.exhausted and result.metrics["train-loss"] > 0
    assert STATE_KEY in state.config_records


def test_empty_dataset_and_large_delta_are_refused(tiny):
    tok, pairs, _ = tiny
    with pytest.raises(BudgetError, match="empty"):
        train_dpo_private(_model(tok), [], TrainSettings(), _privacy(), RecordDict(), tok.pad_token_id)
    with pytest.raises(BudgetError, match="1/N"):
        train_dpo_private(_model(tok), pairs, TrainSettings(), _privacy(delta=0.5), RecordDict(), tok.pad_token_id)


def test_empty_poisson_batches_still_step_and_count(tiny):
    """Expected batch 1 of 12 records: some steps sample nothing; each still adds noise and counts.

    With noise_seed=3 the sampler (seed 4) draws batches of 2, 1, 0, 0, 2, 2 records.
    """
    tok, pairs, _ = tiny
    privacy = _privacy(batch_size=1, local_steps=6, epsilon=50.0)
    state = RecordDict()
    result = train_dpo_private(_model(tok), pairs, TrainSettings(), privacy, state, tok.pad_token_id, noise_seed=3)
    assert not result.exhausted
    assert Ledger.load(state).history == [(2.0, 1 / N, 6)]
    assert result.metrics[EPSILON] == pytest.approx(_direct_epsilon(2.0, 1 / N, 6, privacy.delta), rel=1e-9)


def test_server_cannot_switch_dp_off_after_the_first_private_round(tiny):
    """A later train config with privacy disabled still trains privately against the pinned budget."""
    import dataclasses

    from fedsafe_plugin.client.session import FedSafeSession
    from fedsafe_plugin.config import FedSafeConfig

    tok, pairs, _ = tiny
    state = RecordDict()
    settings = TrainSettings(steps=STEPS, batch_size=BATCH)
    on = FedSafeConfig(privacy=_privacy())
    FedSafeSession(on, state).train_dpo(_model(tok), pairs, settings, tok.pad_token_id)
    steps_before = sum(steps for *_, steps in Ledger.load(state).history)
    off = FedSafeSession(dataclasses.replace(on, privacy=_privacy(enabled=False)), state)
    off.train_dpo(_model(tok), pairs, settings, tok.pad_token_id)
    assert sum(steps for *_, steps in Ledger.load(state).history) > steps_before  # accounted, i.e. private
    assert off.metrics[EPSILON] > 0


def test_accountant_records_the_rate_the_sampler_draws_at(tiny):
    """Opacus's Poisson loader for 93 records in batches of 1 has int(1 / (1/93)) = 92 batches and
    would account at q = 1/92; the sampler draws at 1/93, which is what the plan and ledger hold."""
    tok, _, _ = tiny
    samples = [(encode_prompt(tok, f"q {i}"), encode_response(tok, f"a {i}")) for i in range(93)]
    state = RecordDict()
    result = train_sft_private(_model(tok), samples, TrainSettings(), _privacy(batch_size=1), state, tok.pad_token_id)
    assert Ledger.load(state).history == [(2.0, 1 / 93, STEPS)]
    assert result.metrics[EPSILON] == pytest.approx(_direct_epsilon(2.0, 1 / 93, STEPS, _privacy().delta))


def test_make_private_refuses_to_resume_a_history_past_the_budget(tiny):
    tok, pairs, _ = tiny
    model = _model(tok)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(N)), batch_size=BATCH)
    budget = Budget(epsilon=2.0, delta=1e-3, noise_multiplier=None, accountant="rdp")
    plan = Plan(1, len(loader), 1 / len(loader))
    with make_private(model, torch.optim.SGD(trainable_parameters(model), lr=0.1), loader, budget, plan=plan) as dp:
        spent = dp.history + Ledger(history=dp.history).projected(dp.noise_multiplier, plan.sample_rate, plan.local_steps)
    with pytest.raises(BudgetError, match="after this history reach epsilon"):
        make_private(model, torch.optim.SGD(trainable_parameters(model), lr=0.1), loader, budget, plan=plan, history=spent)


def test_batch_size_steps_and_noise_are_pinned_at_the_first_private_round(tiny):
    """The accountants compose a sequence fixed in advance: a server cannot retune it mid-run."""
    tok, pairs, _ = tiny
    state, model = RecordDict(), _model(tok)
    train_dpo_private(model, pairs, TrainSettings(), _privacy(epsilon=50.0), state, tok.pad_token_id)
    later = _privacy(epsilon=50.0, batch_size=N, local_steps=5, noise_multiplier=0.5)
    result = train_dpo_private(model, pairs, TrainSettings(), later, state, tok.pad_token_id)
    assert result.metrics[NOISE] == 2.0
    assert Ledger.load(state).history == [(2.0, 1 / 3, 2 * STEPS)]  # q = 1/ceil(12/4), never 1/ceil(12/12)
