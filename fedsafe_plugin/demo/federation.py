"""Client datasets and the held-out suite of a run: the package's synthetic data or public data."""

from __future__ import annotations

from dataclasses import replace

from fedsafe_plugin.demo.plan import Plan
from fedsafe_plugin.eval.realdata import FederationData


def build_federation(plan: Plan, poisoned: bool) -> tuple[FederationData, list[str] | None]:
    """(federation, tokenizer corpus); the corpus is None where the tiny default tokenizer fits."""
    fraction = plan.poison_fraction if poisoned else 0.0
    if plan.data_dir:
        from fedsafe_plugin.eval.realdata import load_federation

        # The suite and the tokenizer come from the poisoned split so every arm shares them.
        fed = load_federation(plan.clients, plan.pairs_per_client, fraction, plan.seed, plan.eval_limit or 100, plan.data_dir)
        ref = fed if poisoned else load_federation(plan.clients, plan.pairs_per_client, plan.poison_fraction,
                                                   plan.seed, plan.eval_limit or 100, plan.data_dir)
        return replace(fed, suite=ref.suite), ref.corpus() if plan.model == "tiny" else None
    from fedsafe_plugin.demo_data import make_client_pairs
    from fedsafe_plugin.eval.suites import demo_suite

    clients = [make_client_pairs(c, plan.clients, plan.pairs_per_client, fraction, plan.seed) for c in range(plan.clients)]
    benign = [p for c in clients for p in c if not p.poisoned]
    return FederationData(clients, demo_suite(plan.seed).limit(plan.eval_limit), benign), None
