"""End-to-end checks of the Flower runtime helpers with a tiny numpy app (tests/fixtures/mini_app).

The app runs FedAvg for 2 rounds; each ClientApp adds `vector.increment` to a vector and counts
its calls in `context.state`; the ServerApp prints `[mini-app] round R ... calls-min=.. calls-max=..`.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from flower_runtime import (
    FlowerRunResult,
    local_deployment,
    pids_with_env,
    run_deployment,
    run_simulation,
    tagged_pids,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="process teardown relies on Linux /proc"),
]

MINI_APP = Path(__file__).parent / "fixtures" / "mini_app"


@pytest.fixture(scope="module")
def simulation_result(tmp_path_factory: pytest.TempPathFactory) -> FlowerRunResult:
    """One `flwr run` of the mini app on the local simulation SuperLink, two dotted keys overridden."""
    overrides = {"vector.size": 3, "vector.increment": 0.5}
    return run_simulation(MINI_APP, tmp_path_factory.mktemp("sim"), run_config=overrides, timeout=180)


@pytest.fixture(scope="module")
def deployment_result(tmp_path_factory: pytest.TempPathFactory) -> FlowerRunResult:
    """One run of the mini app on a SuperLink and two SuperNodes."""
    return run_deployment(MINI_APP, tmp_path_factory.mktemp("deploy"), num_supernodes=2, timeout=180)


def test_simulation_via_flwr_run(simulation_result: FlowerRunResult) -> None:
    result = simulation_result
    assert result.completed, result.describe()
    assert "[mini-app] round 2 replies=2" in result.run_log, result.describe()
    # Both overrides reached the apps (flwr 1.41 drops all but the last of several `--run-config
    # fedsafe.x.y=..` flags sharing a prefix; the helper passes a TOML file): 3 floats, 2 x +0.5.
    assert "[mini-app] final vector=[1.0, 1.0, 1.0]" in result.run_log, result.describe()
    assert "Starting local SuperLink" in result.run_log


def test_deployment_with_superlink_and_two_supernodes(deployment_result: FlowerRunResult) -> None:
    result = deployment_result
    assert result.completed, result.describe()
    assert "[mini-app] final vector=[2.0, 2.0, 2.0, 2.0]" in result.run_log, result.describe()
    # Each SuperNode ran its own ClientApp with its own partition id.
    assert "[mini-app client] partition=0 calls=1" in result.process_logs["supernode-0"]
    assert "[mini-app client] partition=1 calls=1" in result.process_logs["supernode-1"]
    assert result.node_log.count("[mini-app client]") == 4  # 2 nodes x 2 rounds, one ClientApp each


def test_client_state_survives_rounds_in_deployment(deployment_result: FlowerRunResult) -> None:
    """Every message starts a fresh ClientApp process; the counter reaches 2 only via context.state."""
    result = deployment_result
    assert "[mini-app] round 1 replies=2 calls-min=1 calls-max=1" in result.run_log, result.describe()
    assert "[mini-app] round 2 replies=2 calls-min=2 calls-max=2" in result.run_log, result.describe()
    for index in range(2):
        assert f"[mini-app client] partition={index} calls=2" in result.process_logs[f"supernode-{index}"]


def test_simulation_state_survives_rounds(simulation_result: FlowerRunResult) -> None:
    assert "[mini-app] round 2 replies=2 calls-min=2 calls-max=2" in simulation_result.run_log


def test_no_process_left_after_runs(simulation_result: FlowerRunResult, deployment_result: FlowerRunResult) -> None:
    for result in (simulation_result, deployment_result):
        assert result.leftover_pids == []
        assert pids_with_env(f"FLWR_HOME={result.flwr_home}") == []  # a second marker, besides the tag


def test_failed_serverapp_is_reported(tmp_path: Path) -> None:
    """`flwr run --stream` exits 0 even when the ServerApp raises; the status from `flwr ls` tells."""
    result = run_simulation(MINI_APP, tmp_path, run_config={"num-server-rounds": "two"}, timeout=180)
    assert result.returncode == 0 and result.status == "finished:failed" and not result.completed
    assert "ValueError: invalid literal for int()" in result.run_log, result.describe()
    assert result.leftover_pids == []


def test_timed_out_run_still_stops_everything(tmp_path: Path) -> None:
    """A ServerApp waiting forever for a third node: the helper times out and stops every process."""
    with local_deployment(tmp_path, num_supernodes=2) as deployment:
        result = deployment.run(MINI_APP, run_config={"min-nodes": 3}, timeout=15)
        port = int(deployment.superlink_address.rsplit(":", 1)[1])
        # Flower's own detached processes (SuperExecs, the ServerApp) are alive besides ours.
        assert len(tagged_pids(deployment.runtime.tracker.tag)) > len(deployment.runtime.tracker.procs)
    assert result.status == "timeout" and not result.completed
    assert result.run_id is not None, result.describe()  # the run was submitted, then cut off
    assert deployment.leftover_pids == []
    assert pids_with_env(f"FLWR_HOME={deployment.runtime.flwr_home}") == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_deployment_over_tls_with_own_ca(tmp_path: Path) -> None:
    """SuperLink with a certificate from a test CA; SuperNodes and `flwr run` verify it."""
    with local_deployment(tmp_path, num_supernodes=2, tls=True) as deployment:
        with pytest.raises(OSError):  # no plain HTTP on the TLS port
            urllib.request.urlopen(f"http://{deployment.superlink_address}/health", timeout=5)
        result = deployment.run(MINI_APP, timeout=180)
    assert result.completed, result.describe()
    assert "[mini-app] round 2 replies=2 calls-min=2 calls-max=2" in result.run_log, result.describe()
    assert deployment.leftover_pids == []
