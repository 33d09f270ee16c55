"""A reduced `fedsafe demo` end to end in Flower's simulation runtime (CI: marked e2e)."""

from __future__ import annotations

import json

import pytest

from fedsafe_plugin.cli import main


@pytest.mark.e2e
def test_reduced_demo_report_and_contrast(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--clients", "4", "--rounds", "2", "--pairs-per-client", "32", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"unsanitized", "feddetox"}
    for arm in report["arms"].values():
        assert [r["round"] for r in arm["rounds"]] == [0, 1, 2]
        for row in arm["rounds"]:
            assert all(0.0 <= row[k] <= 1.0 for k in ("harmful_rate", "jailbreak_rate", "over_refusal_rate", "utility"))
        assert arm["rounds"][-1]["bytes_up"] > 0 and arm["rounds"][-1]["bytes_down"] > 0
        assert [r["replies_kept"] for r in arm["rounds"][1:]] == [4, 4]  # every client's update counted
    starts = [{k: v for k, v in arm["rounds"][0].items() if k != "seconds"} for arm in report["arms"].values()]
    assert starts[0] == starts[1]  # both arms start from the same model and are scored on the same suite
    on = report["arms"]["feddetox"]["switched_on"]
    assert on["sanitize"] and not report["arms"]["unsanitized"]["switched_on"]["sanitize"]
    assert report["arms"]["feddetox"]["rounds"][-1]["sanitize"].get("replaced", 0) > 0
    if on["dp"]:
        assert 0 < report["arms"]["feddetox"]["rounds"][-1]["epsilon"] <= on["epsilon_budget"] + 1e-6
    summary = {r["arm"]: r for r in report["summary"]}
    assert summary["feddetox"]["harmful_rate"] < summary["unsanitized"]["harmful_rate"]
    assert {"report.md", "harmful_rate.png", "epsilon.png", "utility.png"} <= {p.name for p in out.iterdir()}


@pytest.mark.e2e
def test_demo_fails_without_a_report_when_no_client_trained(tmp_path, capsys):
    """Every client refuses (delta > 1/N); the evaluation would still run, so the demo must say so."""
    out = tmp_path / "out"
    code = main(["demo", "--clients", "2", "--rounds", "1", "--pairs-per-client", "4", "--local-steps", "1",
                 "--set", "fedsafe.secagg.mode=none", "--set", "fedsafe.privacy.delta=0.5", "--out", str(out)])
    assert code == 1 and "no client update was kept in round(s) [1]" in capsys.readouterr().err
    assert not (out / "report.json").exists()
