"""Demo plumbing that needs no simulation: --set parsing, arm settings, report files and goals."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

from fedsafe_plugin.config import ConfigError
from fedsafe_plugin.demo.cli import parse_set
from fedsafe_plugin.demo.plan import DEMO_ARMS, Arm, Plan, arm_config
from fedsafe_plugin.demo.report import goals, write_report


def test_parse_set_types_and_errors():
    assert parse_set(["fedsafe.privacy.epsilon=4", "fedsafe.sanitize.enabled=false", "fedsafe.secagg.mode=ckks"]) == {
        "fedsafe.privacy.epsilon": 4, "fedsafe.sanitize.enabled": False, "fedsafe.secagg.mode": "ckks"}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_set(["privacy.epsilon=4"])


def test_arm_config_switches_and_applies_overrides():
    plan = Plan(rounds=4, local_steps=7, overrides={"fedsafe.privacy.epsilon": 2.0})
    unsanitized, feddetox = DEMO_ARMS
    on = arm_config(plan, feddetox)
    assert on.sanitize.enabled and on.privacy.enabled and on.secagg.mode == "secagg+"
    assert (on.privacy.rounds, on.privacy.local_steps, on.privacy.epsilon) == (4, 7, 2.0)
    assert not arm_config(plan, unsanitized).sanitize.enabled
    off = arm_config(Plan(overrides={"fedsafe.privacy.enabled": False}), feddetox)
    assert off.sanitize.enabled and not off.privacy.enabled  # overrides win over the arm's switches
    with pytest.raises(ConfigError):
        arm_config(Plan(overrides={"fedsafe.nope": 1}), Arm("x", "x"))


def test_missing_student_folder_is_a_clear_error(tmp_path):
    from fedsafe_plugin.demo.runner import run_arms

    plan = Plan(overrides={"fedsafe.sanitize.student": str(tmp_path / "nope")})
    with pytest.raises(FileNotFoundError, match="not a student folder"):
        run_arms(plan, DEMO_ARMS, lambda line: None)


def _arm(harm: list[float], utility: float, over: float, label: str) -> dict:
    rows = [{"round": i, "harmful_rate": h, "jailbreak_rate": h, "over_refusal_rate": over, "utility": utility,
             "epsilon": 1.0 * i or None, "bytes_down": 1000 * i, "bytes_up": 1000 * i} for i, h in enumerate(harm)]
    return {"label": label, "rounds": rows, "switched_on": {"sanitize": True, "dp": True, "secagg": "secagg+"}}


def test_report_files_and_goals(tmp_path):
    arms = {"benign": _arm([0.5, 0.1], 0.80, 0.05, "b"), "unsanitized": _arm([0.5, 0.9], 0.80, 0.0, "u"),
            "feddetox": _arm([0.5, 0.1], 0.79, 0.05, "f")}
    report = write_report(tmp_path, "t", Plan(rounds=1), {"arms": arms})
    assert {"report.json", "report.md", "harmful_rate.png", "epsilon.png", "utility.png"} <= {p.name for p in tmp_path.iterdir()}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [r["arm"] for r in saved["summary"]] == ["benign", "unsanitized", "feddetox"]
    assert all(g["met"] for g in saved["goals"]), saved["goals"]
    assert "| feddetox |" in (tmp_path / "report.md").read_text()
    arms["feddetox"] = _arm([0.5, 0.5], 0.70, 0.3, "f")
    assert not any(g["met"] for g in goals(arms))
    assert report["summary"][0]["wire_mb"] == pytest.approx(0.002)


def test_refusal_gap_is_zero_for_a_model_that_ignores_the_prompt(tmp_path):
    always_refuses = _arm([0.5, 0.0], 0.5, 1.0, "refuses everything")  # harmful 0% looks perfect alone
    discriminates = _arm([0.5, 0.1], 0.5, 0.2, "reads the prompt")
    report = write_report(tmp_path, "t", Plan(rounds=1), {"arms": {"refuse": always_refuses, "good": discriminates}})
    gaps = {r["arm"]: r["refusal_gap"] for r in report["summary"]}
    assert gaps["refuse"] == pytest.approx(0.0) and gaps["good"] == pytest.approx(0.7)
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| refuse |"))
    assert "-> +0.0 |" in row.replace("-0.0", "+0.0")


@pytest.mark.parametrize("bad, reason", [
    (dict(clients=0), "clients"), (dict(rounds=0), "rounds"), (dict(poison_fraction=1.0), "poison fraction"),
    (dict(pairs_per_client=0), "pairs per client"), (dict(local_steps=0), "local steps"), (dict(lr=-1.0), "learning rate"),
    (dict(overrides={"fedsafe.sanitize.enabled": True}), "arms differ in"),
])
def test_bad_plans_are_refused_with_a_reason(bad, reason):
    with pytest.raises(ValueError, match=reason):
        Plan(**bad)


def test_demo_cli_refuses_a_bad_plan_before_running(capsys):
    from fedsafe_plugin.cli import main

    assert main(["demo", "--lr", "-1"]) == 2
    assert "learning rate must be" in capsys.readouterr().err


def test_bench_safety_refuses_unknown_arms(capsys, tmp_path, shared_data):
    spec = importlib.util.spec_from_file_location("bench_safety", Path(__file__).parent.parent / "benchmarks" / "bench_safety.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--data-dir", str(shared_data), "--arms", "feddetox_dp", "--out", str(tmp_path)]) == 2
    assert "unknown or no arms ['feddetox_dp']" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_every_arm_is_scored_on_the_same_suite(shared_data):
    from fedsafe_plugin.demo.federation import build_federation

    plan = Plan(clients=3, pairs_per_client=8, eval_limit=10, data_dir=str(shared_data))
    (poisoned, corpus), (benign, _) = build_federation(plan, True), build_federation(plan, False)
    assert poisoned.suite == benign.suite and corpus is not None
    assert sum(p.poisoned for c in poisoned.clients for p in c) > 0 == sum(p.poisoned for c in benign.clients for p in c)
