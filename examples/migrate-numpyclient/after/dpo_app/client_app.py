"""ClientApp (legacy NumPyClient): local DPO on the LoRA adapter."""

from flwr.app import Context
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from fedsafe_plugin import FedDetoxClientMixin, TrainSettings, build_tiny_lora_model, encode_pairs, get_adapter_ndarrays, pad_id, set_adapter_ndarrays
from fedsafe_plugin.demo_data import node_records


class DPOClient(FedDetoxClientMixin, NumPyClient):
    """Trains the adapter on this node's preference pairs."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.model, self.tokenizer = build_tiny_lora_model()

    def get_parameters(self, config):
        return get_adapter_ndarrays(self.model)

    def fit(self, parameters, config):
        set_adapter_ndarrays(self.model, parameters)
        records = self.fedsafe.sanitize(node_records(self.context.node_config))
        settings = TrainSettings(steps=int(self.context.run_config["local-steps"]))
        metrics = self.fedsafe.train_dpo(self.model, encode_pairs(self.tokenizer, records), settings, pad_id(self.tokenizer))
        return self.get_parameters(config), len(records), metrics


def client_fn(context: Context):
    """One client per node."""
    return DPOClient(context).to_client()


app = ClientApp(client_fn=client_fn)
