"""The quickstart federation with DP on: epsilon reported every round, training stops at the budget."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inprocess import run_app_inprocess

APP = Path(__file__).resolve().parent.parent / "examples" / "quickstart-feddetox"


@pytest.mark.e2e
def test_quickstart_with_dp_stops_clients_when_budget_is_spent(capfd):
    # The noise multiplier is derived for a 2-round plan, so round 3 would overspend.
    overrides = {
        "num-server-rounds": 3,
        "fedsafe.sanitize.enabled": False,  # DP only; sanitization has its own tests
        "fedsafe.privacy.enabled": True,
        "fedsafe.privacy.epsilon": 4.0,
        "fedsafe.privacy.delta": 1e-3,
        "fedsafe.privacy.rounds": 2,
        "fedsafe.privacy.local-steps": 2,
    }
    run_app_inprocess(APP, num_supernodes=2, overrides=overrides)
    out = capfd.readouterr().out
    lines = {int(m.group(1)): m.group(0) for m in re.finditer(r"fedsafe round (\d+): .*", out)}
    for r in (1, 2):
        assert "kept 2/2 replies" in lines[r]
        eps = [float(x) for x in re.search(r"epsilon min/mean/max ([\d.]+)/([\d.]+)/([\d.]+)", lines[r]).groups()]
        assert 0 < eps[0] <= eps[2] <= 4.0
    assert "budget exhausted on 2 node(s)" in lines[3] and "kept 0/2" in lines[3]
