"""The quickstart example app in Flower's in-process simulation runtime (its own pyproject config)."""

from pathlib import Path

import pytest

from inprocess import run_app_inprocess

APP = Path(__file__).resolve().parent.parent / "examples" / "quickstart-feddetox"


@pytest.mark.e2e
def test_quickstart_runs_in_process(capfd):
    run_app_inprocess(APP, num_supernodes=2, overrides={"num-server-rounds": 2})
    out = capfd.readouterr().out
    assert "fedsafe round 1: kept 2/2 replies" in out
    assert "fedsafe round 2: kept 2/2 replies" in out
