"""ServerApp: the user's FedAvg, wrapped by FedDetox; only LoRA adapters travel."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedsafe_plugin import FedDetox, get_adapter_arrays
from quickstart_feddetox.task import load_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds and print fedsafe's per-round summary."""
    model, _ = load_model()
    strategy = FedDetox.from_run_config(FedAvg(fraction_train=1.0, fraction_evaluate=1.0), context.run_config)
    strategy.start(
        grid=grid,
        initial_arrays=get_adapter_arrays(model),
        num_rounds=int(context.run_config["num-server-rounds"]),
    )
    for summary in strategy.history.values():
        print(summary.describe(), flush=True)
