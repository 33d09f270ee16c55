"""ServerApp: FedAvg over LoRA adapters."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedsafe_plugin import build_tiny_lora_model, get_adapter_arrays

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg for the configured number of rounds."""
    model, _ = build_tiny_lora_model()
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0)
    result = strategy.start(grid=grid, initial_arrays=get_adapter_arrays(model),
                            num_rounds=int(context.run_config["num-server-rounds"]))
    print("train metrics:", result.train_metrics_clientapp, flush=True)
