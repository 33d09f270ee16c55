"""Both secure modes on a real SuperLink + SuperNodes (Deployment Engine: a fresh ClientApp process
per message, so every SecAgg+ stage must find its state in `context.state`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedsafe_plugin.privacy.secagg import ckks as C
from fedsafe_plugin.privacy.secagg import decrypt_global
from flower_runtime import run_deployment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="process teardown relies on Linux /proc"),
]

NODES, ROUNDS, SIZE = 3, 2, 6

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "secagg-app"
version = "1.0.0"
description = "Throwaway app for the secure aggregation deployment test"
license = "Apache-2.0"
dependencies = ["numpy"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedsafe"

[tool.flwr.app.components]
serverapp = "secagg_app.server_app:app"
clientapp = "secagg_app.client_app:app"

[tool.flwr.app.config]
out = ""
"fedsafe.sanitize.enabled" = false
"fedsafe.secagg.mode" = "none"
"fedsafe.secagg.ckks-context" = ""
"""

SERVER = f"""
import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from fedsafe_plugin.strategies.feddetox import FedDetox

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = {{k: v for k, v in context.run_config.items() if k.startswith("fedsafe.")}}
    strategy = FedDetox.from_run_config(FedAvg(fraction_evaluate=0.0, min_train_nodes={NODES}, min_available_nodes={NODES}), config)
    initial = ArrayRecord({{"w": Array(np.zeros({SIZE}, dtype=np.float32))}})
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds={ROUNDS}, timeout=120)
    np.savez(context.run_config["out"], **{{k: v.numpy() for k, v in result.arrays.items()}})
    print("[secagg-app] done", flush=True)
"""

CLIENT = """
import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from fedsafe_plugin.client.mods import fedsafe_mod
from fedsafe_plugin.privacy.secagg import secagg_mod

app = ClientApp()


@app.train(mods=[secagg_mod, fedsafe_mod])
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    received = msg.content.array_records["arrays"]["w"].numpy()
    new = ArrayRecord({"w": Array(received + np.float32(0.01 * (partition + 1)))})
    metrics = MetricRecord({"num-examples": 10.0 * (partition + 1)})
    return Message(RecordDict({"arrays": new, "metrics": metrics}), reply_to=msg)
"""


def _app(folder: Path) -> Path:
    package = folder / "secagg_app"
    package.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (package / "__init__.py").write_text("")
    (package / "server_app.py").write_text(SERVER)
    (package / "client_app.py").write_text(CLIENT)
    return folder


def _expected() -> float:
    weights = [10.0 * (p + 1) for p in range(NODES)]
    return ROUNDS * sum(w * 0.01 * (p + 1) for p, w in enumerate(weights)) / sum(weights)


def test_secagg_plus_on_superlink_and_supernodes(tmp_path: Path):
    out = tmp_path / "final.npz"
    result = run_deployment(_app(tmp_path / "app"), tmp_path / "work", num_supernodes=NODES, timeout=420,
                            run_config={"out": str(out), "fedsafe.secagg.mode": "secagg+"})
    assert result.completed, result.describe()
    final = np.load(out)["w"]
    assert np.allclose(final, _expected(), atol=1e-5), result.describe()


def test_ckks_on_superlink_and_supernodes(tmp_path: Path):
    keys = tmp_path / "keys"
    C.write_keys(keys)
    out = tmp_path / "final.npz"
    result = run_deployment(_app(tmp_path / "app"), tmp_path / "work", num_supernodes=NODES, timeout=420,
                            run_config={"out": str(out), "fedsafe.secagg.mode": "ckks",
                                        "fedsafe.secagg.ckks-context": str(keys / C.PUBLIC_FILE)},
                            node_config={"fedsafe-ckks-context": str(keys / C.SECRET_FILE)})
    assert result.completed, result.describe()
    saved = dict(np.load(out))
    from flwr.app import Array, ArrayRecord

    record = ArrayRecord({k: Array(v) for k, v in saved.items()})
    assert C.is_encrypted(record)  # the server only ever had the ciphertext
    final = decrypt_global(record, str(keys))["w"]
    assert np.allclose(final, _expected(), atol=1e-3)
