"""Run arms: federated ones in Flower's simulation runtime, the centralized one in-process."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from fedsafe_plugin.demo.plan import Arm, Plan, arm_config, switched_on

Printer = Callable[[str], None]


def format_row(arm: str, rounds: int, row: dict[str, Any]) -> str:
    """One progress line per evaluated round."""
    eps = f"  eps {row['epsilon']:.2f}" if row.get("epsilon") is not None else ""
    wire = (row.get("bytes_down", 0) + row.get("bytes_up", 0)) / 1e6
    return (
        f"[{arm}] round {row['round']}/{rounds}: harmful {row['harmful_rate']:.2f}  "
        f"jailbreak {row['jailbreak_rate']:.2f}  over-refusal {row['over_refusal_rate']:.2f}  "
        f"utility {row['utility']:.2f}{eps}  wire {wire:.2f} MB  ({row['seconds']:.0f}s)"
    )


def run_federated(plan: Plan, arm: Arm, echo: Printer = print) -> dict[str, Any]:
    """One federated arm under `flwr.simulation.run_simulation`; returns its rounds and settings."""
    from flwr.simulation import run_simulation

    from fedsafe_plugin.demo.apps import build_client_app, build_server_app
    from fedsafe_plugin.demo.federation import build_federation

    fed, corpus = build_federation(plan, arm.poisoned)
    config = arm_config(plan, arm)
    sink: dict[str, Any] = {}
    server = build_server_app(plan, fed, corpus, config, sink, lambda row: echo(format_row(arm.name, plan.rounds, row)))
    client = build_client_app(plan, fed, corpus, config)
    started = time.perf_counter()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    run_simulation(
        server_app=server, client_app=client, num_supernodes=plan.clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    rounds = sink.get("rounds", [])
    if len(rounds) != plan.rounds + 1:
        raise RuntimeError(f"arm {arm.name}: the simulation evaluated {len(rounds)} of {plan.rounds + 1} rounds")
    idle = [row["round"] for row in rounds[1:] if not row.get("replies_kept")]
    if idle:  # the evaluation runs anyway: without this check a failed run reports unchanged rates
        raise RuntimeError(f"arm {arm.name}: no client update was kept in round(s) {idle} "
                           "(every client failed or was out of budget; the client errors are in the log above)")
    return {"label": arm.label, "switched_on": switched_on(config), "rounds": rounds,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "poisoned_pairs": sum(p.poisoned for c in fed.clients for p in c),
            "pairs": sum(len(c) for c in fed.clients)}


def run_centralized(plan: Plan, arm: Arm, echo: Printer = print) -> dict[str, Any]:
    """Pooled benign data, one model: per round, `local_steps` steps of clients x batch pairs."""
    from dataclasses import replace

    from fedsafe_plugin.demo.apps import fresh_lora_model
    from fedsafe_plugin.demo.federation import build_federation
    from fedsafe_plugin.eval.harness import evaluate
    from fedsafe_plugin.training.data import encode_pairs, pad_id
    from fedsafe_plugin.training.local import train_dpo

    fed, corpus = build_federation(plan, poisoned=False)
    model, tokenizer = fresh_lora_model(plan.model, tuple(corpus) if corpus is not None else None, plan.seed)
    pairs = encode_pairs(tokenizer, [p.as_record() for p in fed.benign_pool], plan.max_length)
    settings = plan.train_settings(plan.batch_size * plan.clients)
    rows, started = [], time.perf_counter()
    for r in range(plan.rounds + 1):
        if r:
            train_dpo(model, pairs, replace(settings, seed=plan.seed * 100_003 + r), pad_id(tokenizer))
        res = evaluate(model, tokenizer, fed.suite, max_length=max(plan.max_length, 256), progress=False)
        row = {"round": r, **{k: res[k] for k in ("harmful_rate", "jailbreak_rate", "over_refusal_rate", "utility")},
               "margins": res["margins"], "epsilon": None, "bytes_down": 0, "bytes_up": 0, "sanitize": {},
               "replies_kept": None, "seconds": round(time.perf_counter() - started, 1)}
        rows.append(row)
        echo(format_row(arm.name, plan.rounds, row))
    return {"label": arm.label, "switched_on": {"sanitize": False, "dp": False, "epsilon_budget": None, "secagg": "none"},
            "rounds": rows, "wall_seconds": round(time.perf_counter() - started, 1),
            "poisoned_pairs": 0, "pairs": len(pairs)}


def run_arms(plan: Plan, arms: Sequence[Arm], echo: Printer = print) -> dict[str, Any]:
    """Every arm with the same plan: the report's `arms` section (a bad student path fails first)."""
    if any(a.sanitize for a in arms):
        from fedsafe_plugin.sanitize.classifier import student_config_file

        student_config_file(plan.overrides.get("fedsafe.sanitize.student"))  # a bad path fails before any arm runs
    from fedsafe_plugin.demo.apps import quiet_library_warnings

    logging.getLogger("flwr").setLevel(logging.ERROR)
    quiet_library_warnings()
    results = {}
    for arm in arms:
        echo(f"== arm {arm.name}: {arm.label}")
        results[arm.name] = run_centralized(plan, arm, echo) if arm.centralized else run_federated(plan, arm, echo)
    return {"arms": results}
