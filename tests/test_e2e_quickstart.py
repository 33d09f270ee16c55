"""The quickstart example run for real: `flwr run` simulation, and a SuperLink with two SuperNodes.

Passes only when every round kept both clients' replies, read from the ServerApp's per-round
`fedsafe round R: kept K/N replies; ...` summary line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flower_runtime import FlowerRunResult, run_deployment, run_simulation

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="process teardown relies on Linux /proc"),
]

APP = Path(__file__).parents[1] / "examples" / "quickstart-feddetox"
ROUNDS = 2
FAST = {"num-server-rounds": ROUNDS, "local-steps": 2, "pairs-per-client": 16}


@pytest.fixture(scope="module")
def simulation_result(tmp_path_factory: pytest.TempPathFactory) -> FlowerRunResult:
    """One short `flwr run` of the quickstart on the local simulation SuperLink."""
    return run_simulation(APP, tmp_path_factory.mktemp("quickstart-sim"), run_config=FAST, timeout=600)


@pytest.fixture(scope="module")
def deployment_result(tmp_path_factory: pytest.TempPathFactory) -> FlowerRunResult:
    """One short run of the quickstart on a SuperLink and two SuperNodes."""
    return run_deployment(APP, tmp_path_factory.mktemp("quickstart-deploy"), run_config=FAST, timeout=600)


def round_counts(result: FlowerRunResult, server_round: int) -> dict[str, float]:
    """The `name=value` counts of one round's summary line, e.g. {"sanitize.replaced": 10.0}."""
    line = next(text for text in result.run_log.splitlines() if text.startswith(f"fedsafe round {server_round}: "))
    pairs = (part.split("=", 1) for part in line.split("; ") if "=" in part)
    return {key: float(value) for key, value in pairs}


def assert_every_round_kept_both(result: FlowerRunResult) -> None:
    """The run completed and each round's summary says both replies were aggregated."""
    assert result.completed, result.describe()
    for server_round in range(1, ROUNDS + 1):
        assert f"fedsafe round {server_round}: kept 2/2 replies" in result.run_log, result.describe()
    assert "client error" not in result.run_log, result.describe()
    assert result.leftover_pids == []


def test_quickstart_under_flwr_run_simulation(simulation_result: FlowerRunResult) -> None:
    assert_every_round_kept_both(simulation_result)


def test_quickstart_on_superlink_with_two_supernodes(deployment_result: FlowerRunResult) -> None:
    assert_every_round_kept_both(deployment_result)
    # Each SuperNode ran ClientApps: Flower logs every message it pulled and answered.
    for index in range(2):
        assert "Start `flwr-clientapp` process" in deployment_result.process_logs[f"supernode-{index}"]


def test_quickstart_sanitizes_once_per_node_across_fresh_clientapp_processes(
    deployment_result: FlowerRunResult,
) -> None:
    """Poisoned pairs were rewritten, and round 2 reused each node's sanitization via context.state."""
    first, second = round_counts(deployment_result, 1), round_counts(deployment_result, 2)
    assert first["sanitize.replaced"] > 0 and first["sanitize.cached"] == 0, deployment_result.describe()
    assert second["sanitize.cached"] == 2, deployment_result.describe()


def _secagg_config(mode: str, keys: Path) -> tuple[dict, dict | None]:
    """(run config, node config) for the quickstart with secure aggregation `mode`."""
    from fedsafe_plugin.privacy.secagg import ckks

    run_config = {**FAST, "fedsafe.secagg.mode": mode}
    if mode != "ckks":
        return run_config, None
    ckks.write_keys(keys)
    run_config["fedsafe.secagg.ckks-context"] = str(keys / ckks.PUBLIC_FILE)  # the server: public only
    return run_config, {"fedsafe-ckks-context": str(keys / ckks.SECRET_FILE)}  # each client: the secret


@pytest.mark.parametrize("mode", ["secagg+", "ckks"])
def test_quickstart_with_secure_aggregation_under_flwr_run(mode: str, tmp_path: Path) -> None:
    run_config, _ = _secagg_config(mode, tmp_path / "keys")
    if mode == "ckks":  # one machine: clients find the secret beside the public context
        run_config["fedsafe.secagg.ckks-context"] = str(tmp_path / "keys")
    result = run_simulation(APP, tmp_path / "work", run_config=run_config, timeout=600)
    assert_every_round_kept_both(result)
    assert "secagg.failed" not in result.run_log, result.describe()
    if mode == "secagg+":
        assert "secagg.survivors=2" in result.run_log, result.describe()


@pytest.mark.parametrize("mode", ["secagg+", "ckks"])
def test_quickstart_with_secure_aggregation_on_superlink(mode: str, tmp_path: Path) -> None:
    run_config, node_config = _secagg_config(mode, tmp_path / "keys")
    result = run_deployment(APP, tmp_path / "work", run_config=run_config, node_config=node_config, timeout=600)
    assert_every_round_kept_both(result)
    assert "secagg.failed" not in result.run_log, result.describe()
