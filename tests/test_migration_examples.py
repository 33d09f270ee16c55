"""Both migration examples run end to end, before and after adopting fedsafe (in-process runtime)."""

from pathlib import Path

import pytest

from inprocess import run_app_inprocess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.e2e
@pytest.mark.parametrize("app", ["migrate-message-api/before", "migrate-message-api/after"])
def test_message_api_migration_runs(app, capfd):
    run_app_inprocess(EXAMPLES / app, num_supernodes=2)
    captured = capfd.readouterr()
    assert "train metrics:" in captured.out and "train-loss" in captured.out
    if app.endswith("after"):
        assert "fedsafe round 2: kept 2/2 replies" in captured.out + captured.err


@pytest.mark.e2e
@pytest.mark.parametrize("app", ["migrate-numpyclient/before", "migrate-numpyclient/after"])
def test_numpyclient_migration_runs(app, capfd):
    run_app_inprocess(EXAMPLES / app, num_supernodes=2)
    captured = capfd.readouterr()
    logs = captured.out + captured.err
    assert "aggregate_fit: received 2 results and 0 failures" in logs
    if app.endswith("after"):
        assert "fedsafe round 2: kept 2/2 replies" in logs
