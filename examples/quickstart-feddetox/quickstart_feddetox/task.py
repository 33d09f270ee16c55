"""This app's model, local data and training settings (swap in your own LM and dataset here)."""

from __future__ import annotations

from flwr.app import Context

from fedsafe_plugin import TrainSettings, build_tiny_lora_model
from fedsafe_plugin.demo_data import node_records


def load_model():
    """The tiny causal LM built offline (same base weights everywhere) with a fresh LoRA adapter."""
    return build_tiny_lora_model()


def load_local_pairs(context: Context) -> list[dict]:
    """This node's preference pairs (synthetic; some nodes hold poisoned pairs)."""
    run = context.run_config
    return node_records(context.node_config, int(run["pairs-per-client"]), float(run["poison-fraction"]))


def train_settings(context: Context) -> TrainSettings:
    """Local optimisation settings from the run config."""
    run = context.run_config
    return TrainSettings(steps=int(run["local-steps"]), batch_size=int(run["batch-size"]), lr=float(run["learning-rate"]))
