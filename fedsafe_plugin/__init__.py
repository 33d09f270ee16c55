"""fedsafe-plugin: FedDetox for Flower apps that align small language models on private data.

Server: wrap your strategy with `FedDetox` (Message API) or `FedDetoxLegacy` (NumPyClient apps).
Client: `@app.train(mods=fedsafe_mods())` + `FedSafeSession`, or `FedDetoxClientMixin`.
Settings: `fedsafe.*` keys in `[tool.flwr.app.config]` (see `FedSafeConfig`).
Data: `encode_pairs` + `pad_id` feed `train_dpo`; `fedsafe_plugin.sanitize.Sanitizer` works outside Flower.
"""

from fedsafe_plugin.client.mixin import FedDetoxClientMixin
from fedsafe_plugin.client.mods import fedsafe_evaluate_mods, fedsafe_mod, fedsafe_mods
from fedsafe_plugin.client.session import FedSafeSession
from fedsafe_plugin.config import ConfigError, FedSafeConfig
from fedsafe_plugin.privacy.budget import Budget, BudgetError, Plan
from fedsafe_plugin.strategies.feddetox import FedDetox
from fedsafe_plugin.strategies.legacy import FedDetoxLegacy
from fedsafe_plugin.training.data import encode_pairs, pad_id
from fedsafe_plugin.training.dp import make_private, train_dpo_private, train_sft_private
from fedsafe_plugin.training.local import TrainSettings, train_dpo, train_sft
from fedsafe_plugin.training.lora import (
    add_lora,
    get_adapter_arrays,
    get_adapter_ndarrays,
    set_adapter_arrays,
    set_adapter_ndarrays,
)
from fedsafe_plugin.eval.scoring import preference_accuracy
from fedsafe_plugin.training.tiny import build_tiny_lora_model, build_tiny_model, build_tiny_tokenizer

__all__ = [
    "Budget", "BudgetError", "ConfigError", "FedDetox", "FedDetoxClientMixin", "FedDetoxLegacy",
    "FedSafeConfig", "FedSafeSession", "Plan", "TrainSettings", "add_lora",
    "build_tiny_lora_model", "build_tiny_model", "build_tiny_tokenizer", "encode_pairs",
    "fedsafe_evaluate_mods", "fedsafe_mod", "fedsafe_mods", "get_adapter_arrays",
    "get_adapter_ndarrays", "make_private", "pad_id", "preference_accuracy", "set_adapter_arrays",
    "set_adapter_ndarrays", "train_dpo", "train_dpo_private", "train_sft", "train_sft_private",
]
