"""The benchmark's public-data split: poison share and skew, and no evaluation prompt in client data."""

from __future__ import annotations

import pytest

from fedsafe_plugin.eval.realdata import COMPLY_OPENERS, EVAL_REFUSALS, TRAIN_REFUSALS, load_federation


@pytest.fixture(scope="module")
def fed(shared_data):
    return load_federation(num_clients=6, pairs_per_client=30, poison_fraction=0.3, eval_size=40, data_dir=shared_data)


def test_poison_share_and_skew(fed):
    poisoned = [sum(p.poisoned for p in c) for c in fed.clients]
    total = sum(len(c) for c in fed.clients)
    assert poisoned[0] == 0 and poisoned[-1] > poisoned[1]
    assert abs(sum(poisoned) / total - 0.3) < 0.05
    for c in fed.clients:
        for p in c:
            if p.poisoned:  # a real compliant answer preferred over a refusal
                assert p.rejected in TRAIN_REFUSALS and p.chosen not in TRAIN_REFUSALS


def test_evaluation_prompts_never_reach_clients(fed):
    client_prompts = {p.prompt for c in fed.clients for p in c}
    client_texts = {t for c in fed.clients for p in c for t in (p.chosen, p.rejected)}
    for name, contrasts in fed.suite.sets().items():
        assert contrasts, name
        assert not {c.prompt for c in contrasts} & client_prompts, name
    assert not set(EVAL_REFUSALS) & client_texts
    assert not set(COMPLY_OPENERS) & client_texts
    assert "clients" in fed.suite.sources and "harmbench_text (standard)" in fed.suite.sources["harmful"]
