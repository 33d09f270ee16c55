"""The migration example apps (`examples/migrate-*/{before,after}`) run for real under `flwr run` simulation.

An `after` app passes only when every round's fedsafe summary says both clients' replies were kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flower_runtime import run_simulation

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="process teardown relies on Linux /proc"),
]

EXAMPLES = Path(__file__).parents[1] / "examples"
ROUNDS = 2


@pytest.mark.parametrize("example", ["migrate-message-api", "migrate-numpyclient"])
def test_migrated_app_runs_under_flwr_run(example: str, tmp_path: Path) -> None:
    result = run_simulation(
        EXAMPLES / example / "after", tmp_path, run_config={"num-server-rounds": ROUNDS, "local-steps": 2}, timeout=600
    )
    assert result.completed, result.describe()
    for server_round in range(1, ROUNDS + 1):
        assert f"fedsafe round {server_round}: kept 2/2 replies" in result.run_log, result.describe()
    assert result.leftover_pids == []


@pytest.mark.parametrize("example", ["migrate-message-api", "migrate-numpyclient"])
def test_app_before_migration_runs_under_flwr_run(example: str, tmp_path: Path) -> None:
    """The plain app the diff starts from is a working Flower app too."""
    result = run_simulation(
        EXAMPLES / example / "before", tmp_path, run_config={"num-server-rounds": ROUNDS, "local-steps": 2}, timeout=600
    )
    assert result.completed, result.describe()
    assert "fedsafe round" not in result.run_log
    assert result.leftover_pids == []
