"""`fedsafe-dp-ledger`: a device's budget holds across runs (Flower gives each run a fresh state)."""

from __future__ import annotations

import json
import threading

from flwr.app import Context, RecordDict

from fedsafe_plugin import TrainSettings
from fedsafe_plugin.privacy.accounting import EPSILON, EXHAUSTED, Ledger, device_ledger

from test_dp_enforced import PRIVATE, _mod_round, tiny  # noqa: F401  (tiny is a fixture)


def _run_context(path):
    """A new run on the same device: empty state, the node's config."""
    return Context(run_id=7, node_id=5, node_config={"fedsafe-dp-ledger": str(path)}, state=RecordDict(), run_config={})


def _private_round(tiny, context, config=PRIVATE):
    model, tok, samples = tiny
    return _mod_round(model, config, lambda fs: fs.train_sft(model, samples, TrainSettings(), tok.pad_token_id), context)


def test_budget_composes_across_runs_and_then_stops(tiny, tmp_path):
    path = tmp_path / "ledger.json"
    config = {**PRIVATE, "fedsafe.privacy.epsilon": 5.0, "fedsafe.privacy.noise-multiplier": 1.0}
    epsilons = []
    for _ in range(10):  # every round in a new run: without the file each would start at epsilon 0
        metrics = _private_round(tiny, _run_context(path), config).content["metrics"]
        if metrics[EXHAUSTED] == 1:
            break
        epsilons.append(metrics[EPSILON])
    assert len(epsilons) >= 2 and epsilons == sorted(epsilons) and len(set(epsilons)) == len(epsilons)
    assert max(epsilons) <= 5.0 and metrics[EXHAUSTED] == 1  # the last run was refused, not trained
    assert sum(n for _, _, n in Ledger.from_record(json.loads(path.read_text())).history) == 2 * len(epsilons)


def test_a_device_that_trained_privately_stays_private_in_a_new_run(tiny, tmp_path):
    path = tmp_path / "ledger.json"
    assert not _private_round(tiny, _run_context(path)).has_error()
    model, _, _ = tiny
    reply = _mod_round(model, {}, lambda fs: {}, _run_context(path))  # new run, privacy off, plain training
    assert reply.has_error() and "did not train through FedSafeSession" in reply.error.reason


def test_an_unreadable_ledger_is_an_error_not_a_fresh_budget(tiny, tmp_path):
    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    reply = _private_round(tiny, _run_context(path))
    assert reply.has_error() and "unreadable" in reply.error.reason and path.read_text() == "{not json"
    for bad, reason in ((3, "must be a file path"), ("ledger.json", "absolute path"),
                        (str(tmp_path / "missing" / "ledger.json"), "existing folder")):
        context = _run_context(path)
        context.node_config["fedsafe-dp-ledger"] = bad
        reply = _private_round(tiny, context)
        assert reply.has_error() and reason in reply.error.reason, bad


def test_a_refused_first_round_pins_nothing(tiny, tmp_path, caplog):
    """A first round the budget cannot fit spends nothing: a later, feasible config still trains."""
    path = tmp_path / "ledger.json"
    too_small = {**PRIVATE, "fedsafe.privacy.epsilon": 0.01, "fedsafe.privacy.noise-multiplier": 0.3}
    assert _private_round(tiny, _run_context(path), too_small).content["metrics"][EXHAUSTED] == 1
    assert not path.exists()
    context = _run_context(path)
    for _ in range(2):  # the same 'auto' config twice: nothing changed, so nothing to warn about
        metrics = _private_round(tiny, context).content["metrics"]
        assert metrics[EXHAUSTED] == 0 and metrics[EPSILON] <= PRIVATE["fedsafe.privacy.epsilon"]
    assert "changed after training began" not in caplog.text
    assert Ledger.from_record(json.loads(path.read_text())).noise_multiplier != 0.3


def test_two_runs_on_one_device_take_turns_with_the_ledger(tmp_path):
    """The second run waits for the first's lock, then starts from the ledger the first wrote."""
    path, first, second = str(tmp_path / "ledger.json"), RecordDict(), RecordDict()
    seen = []

    def other_run():
        with device_ledger(path, second):
            seen.append(Ledger.load(second).history)

    with device_ledger(path, first):
        waiting = threading.Thread(target=other_run)
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and not seen  # blocked on the lock
        Ledger(history=[(1.0, 0.5, 3)], epsilon=1.0, delta=1e-5).save(first)  # this run's private round
    waiting.join(timeout=10)
    assert seen == [[(1.0, 0.5, 3)]]
