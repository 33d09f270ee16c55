"""Run a Flower app folder in Flower's in-process simulation runtime, with its pyproject config.

The public `run_simulation` gives the apps an empty run config; `flwr run` reads the app's
`[tool.flwr.app.config]`. `_run_simulation(app_dir=...)` is what makes clients read that config,
so these tests use it (pinned flwr <1.43) and build the ServerApp context the same way.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.simulation.run_simulation import NOOP_FEDERATION_ID, _run_simulation
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.telemetry import EventType


def load_component(app_dir: Path, ref: str) -> Any:
    """Import `module:attr` from the app folder (added to sys.path)."""
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def run_app_inprocess(
    app_dir: Path, num_supernodes: int, overrides: dict | None = None, server_app: Any = None, client_app: Any = None
) -> None:
    """Run the app's ServerApp and ClientApp (or `server_app` / `client_app`) in-process (Ray backend, 1 CPU per client)."""
    import tomllib

    meta = tomllib.loads((app_dir / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    config = get_fused_config_from_dir(app_dir, overrides or {})
    run = Run.create_empty(run_id=1)
    run.primary_task_id = 1
    run.federation_id = NOOP_FEDERATION_ID
    run.override_config = overrides or {}
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    server_context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    _run_simulation(
        num_supernodes=num_supernodes,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app or load_component(app_dir, meta["clientapp"]),
        server_app=server_app or load_component(app_dir, meta["serverapp"]),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        server_app_context=server_context,
        app_dir=str(app_dir),
        is_app=True,
        run=run,
    )
