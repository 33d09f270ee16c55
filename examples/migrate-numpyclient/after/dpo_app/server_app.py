"""ServerApp (legacy): FedAvg over LoRA adapters."""

from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.serverapp import ServerApp

from fedsafe_plugin import FedDetoxLegacy, FedSafeConfig, build_tiny_lora_model, get_adapter_ndarrays


def server_fn(context: Context) -> ServerAppComponents:
    """FedAvg starting from a fresh adapter."""
    model, _ = build_tiny_lora_model()
    strategy = FedAvg(fraction_evaluate=0.0, initial_parameters=ndarrays_to_parameters(get_adapter_ndarrays(model)))
    strategy = FedDetoxLegacy(strategy, FedSafeConfig.from_run_config(context.run_config))
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=int(context.run_config["num-server-rounds"])))


app = ServerApp(server_fn=server_fn)
