"""Budgets and accounting: Opacus's numbers, derived noise fits the plan, the budget is never exceeded."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opacus.accountants import create_accountant

from fedsafe_plugin.cli import main as fedsafe_main
from fedsafe_plugin.privacy.accounting import Ledger
from fedsafe_plugin.privacy.budget import (
    Budget,
    BudgetError,
    Plan,
    epsilon_of,
    epsilon_schedule,
    noise_multiplier_for,
    sample_rate_for,
)


def _restart(state):
    """What a fresh Deployment-Engine process sees: the state after a protobuf round trip."""
    from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    wire = recorddict_to_proto(state).SerializeToString()
    proto = ProtoRecordDict()
    proto.ParseFromString(wire)
    return recorddict_from_proto(proto)


@pytest.mark.parametrize("mechanism", ["prv", "rdp"])
def test_epsilon_matches_opacus_accountant_stepped_directly(mechanism):
    sigma, q, steps, delta = 1.1, 0.125, 12, 1e-4
    acc = create_accountant(mechanism=mechanism)
    for _ in range(3 * steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    direct = acc.get_epsilon(delta=delta)
    schedule = epsilon_schedule(sigma, Plan(3, steps, q), delta, mechanism)
    assert schedule[-1] == pytest.approx(direct, rel=1e-9)
    assert schedule[0] < schedule[1] < schedule[2]


def test_derived_noise_keeps_plan_within_target_and_is_tight():
    budget, plan = Budget(epsilon=2.0, delta=1e-5, accountant="rdp"), Plan(4, 5, 0.2)
    sigma = noise_multiplier_for(budget, plan)
    history = [(sigma, plan.sample_rate, plan.total_steps)]
    assert epsilon_of(history, budget.delta, "rdp") <= budget.epsilon
    # Not grossly over-noised: 5% less noise would overspend.
    assert epsilon_of([(0.95 * sigma, plan.sample_rate, plan.total_steps)], budget.delta, "rdp") > budget.epsilon


def test_given_noise_multiplier_is_used_as_is():
    assert noise_multiplier_for(Budget(1.0, 1e-5, noise_multiplier=0.7), Plan(1, 1, 0.5)) == 0.7


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: Budget(epsilon=0.0, delta=1e-5), "epsilon"),
        (lambda: Budget(epsilon=-1.0, delta=1e-5), "epsilon"),
        (lambda: Budget(epsilon=1.0, delta=1.0), "delta"),
        (lambda: Budget(epsilon=1.0, delta=1e-3).check_dataset(2000), "1/N"),
        (lambda: Budget(epsilon=1.0, delta=1e-5).check_dataset(0), "empty"),
        (lambda: Plan(1, 1, 0.0), "sample rate"),
        (lambda: Plan(1, 1, 1.5), "sample rate"),
        (lambda: sample_rate_for(0, 8), "empty"),
        (lambda: noise_multiplier_for(Budget(1e-9, 1e-5, accountant="rdp"), Plan(10, 10, 1.0)), "noise multiplier"),
    ],
)
def test_bad_input_gives_clear_error(make, needle):
    with pytest.raises(BudgetError, match=needle):
        make()


def test_sample_rate_is_opacus_rule():
    assert sample_rate_for(24, 8) == 1 / 3
    assert sample_rate_for(25, 8) == 1 / 4
    assert sample_rate_for(3, 8) == 1.0


def test_ledger_pins_budget_server_cannot_raise_it():
    ledger = Ledger()
    assert ledger.pin(Budget(2.0, 1e-5)).epsilon == 2.0
    raised = ledger.pin(Budget(50.0, 1e-3))
    assert (raised.epsilon, raised.delta) == (2.0, 1e-5)
    assert ledger.pin(Budget(1.0, 1e-5)).epsilon == 1.0


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    epsilon=st.floats(0.3, 6.0),
    sigma=st.floats(0.6, 3.0),
    steps=st.integers(1, 12),
    rates=st.lists(st.sampled_from([1.0, 0.5, 0.25, 0.1]), min_size=1, max_size=3),
    joins=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_budget_never_exceeded_over_random_plans(epsilon, sigma, steps, rates, joins):
    """Random participation (rounds skipped) and data sizes; each round restarts from the wire state."""
    from flwr.app import RecordDict

    state, budget = RecordDict(), Budget(epsilon, 1e-5, accountant="rdp")
    for r, joined in enumerate(joins):
        if not joined:
            continue
        ledger = Ledger.load(_restart(state))
        pinned = ledger.pin(budget)
        q = rates[r % len(rates)]
        exceed, after = ledger.preview(pinned, sigma, q, steps)
        if exceed:
            assert after > epsilon  # refusals are justified, not blanket
        else:
            ledger.history = ledger.projected(sigma, q, steps)
        ledger.save(state)
        restored = Ledger.load(_restart(state))
        assert restored.history == ledger.history  # exact round trip through the wire format
        assert restored.spent("rdp") <= epsilon


def test_cli_derives_sigma_and_prints_each_round(capsys):
    code = fedsafe_main(["budget", "--epsilon", "3", "--delta", "1e-5", "--rounds", "3",
                         "--local-steps", "5", "--sample-rate", "0.2", "--accountant", "rdp"])
    out = capsys.readouterr().out
    assert code == 0
    sigma = float(out.split("noise multiplier: ")[1].split()[0])
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    eps = [float(r[2]) for r in rows]
    assert eps == sorted(eps) and eps[-1] <= 3.0
    assert eps[-1] == pytest.approx(epsilon_of([(sigma, 0.2, 15)], 1e-5, "rdp"), rel=1e-3)


def test_cli_with_noise_multiplier_prints_spent_epsilon(capsys):
    code = fedsafe_main(["budget", "--noise-multiplier", "1.0", "--delta", "1e-5", "--rounds", "2",
                         "--local-steps", "4", "--sample-rate", "0.5", "--accountant", "rdp"])
    out = capsys.readouterr().out
    assert code == 0
    last = float(out.strip().splitlines()[-1].split()[2])
    assert last == pytest.approx(epsilon_of([(1.0, 0.5, 8)], 1e-5, "rdp"), rel=1e-3)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--epsilon", "0"], "epsilon"),
        (["--epsilon", "1", "--delta", "2"], "delta"),
        (["--epsilon", "1", "--sample-rate", "0"], "sample rate"),
        (["--epsilon", "1", "--records", "10", "--delta", "0.5"], "1/N"),
    ],
)
def test_cli_bad_input(capsys, args, needle):
    base = {"--delta": "1e-5", "--rounds": "2", "--local-steps": "3", "--sample-rate": "0.5"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["budget"] + [x for kv in base.items() for x in kv]
    assert fedsafe_main(argv) == 2
    assert needle in capsys.readouterr().err
