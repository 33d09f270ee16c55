"""LoRA adapters with peft, and the adapter-only exchange with Flower ArrayRecords.

Only the adapter's state dict (peft's `get_peft_model_state_dict`) crosses the wire, in both
directions; the frozen base never leaves the device.
"""

from __future__ import annotations

from typing import Any

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class AdapterMismatchError(ValueError):
    """Received adapter arrays do not match the local adapter (keys or shapes)."""


def add_lora(model: Any, r: int = 8, alpha: int = 16, targets: tuple[str, ...] = DEFAULT_TARGETS) -> Any:
    """Wrap `model` with a fresh LoRA adapter (dropout 0 so per-sample DP gradients are exact)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    chosen = [t for t in targets if t in present] or ["c_attn"]  # GPT-2 names its projection c_attn
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=chosen, bias="none")
    return get_peft_model(model, config)


def get_adapter_arrays(model: Any) -> Any:
    """The LoRA adapter as an ArrayRecord (peft's adapter state dict, detached to CPU)."""
    from flwr.app import ArrayRecord
    from peft import get_peft_model_state_dict

    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    return ArrayRecord(state)


def set_adapter_arrays(model: Any, arrays: Any) -> None:
    """Load an ArrayRecord into the model's adapter; raise AdapterMismatchError on any mismatch."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    local = get_peft_model_state_dict(model)
    incoming = arrays.to_torch_state_dict()
    missing, extra = sorted(set(local) - set(incoming)), sorted(set(incoming) - set(local))
    if missing or extra:
        raise AdapterMismatchError(
            f"adapter keys differ: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}"
        )
    for key, tensor in incoming.items():
        if tuple(tensor.shape) != tuple(local[key].shape):
            raise AdapterMismatchError(
                f"adapter array {key!r} has shape {tuple(tensor.shape)}, expected {tuple(local[key].shape)}"
            )
    set_peft_model_state_dict(model, {k: v.to(local[k].dtype) for k, v in incoming.items()})


def get_adapter_ndarrays(model: Any) -> list:
    """The adapter as a list of NumPy arrays in a fixed key order (for NumPyClient apps)."""
    return get_adapter_arrays(model).to_numpy_ndarrays()


def set_adapter_ndarrays(model: Any, ndarrays: list) -> None:
    """Load NumPyClient parameters (as from `get_adapter_ndarrays`) into the adapter."""
    from peft import get_peft_model_state_dict

    from fedsafe_plugin.validation import to_array_record

    keys = list(get_peft_model_state_dict(model))
    if len(keys) != len(ndarrays):
        raise AdapterMismatchError(f"expected {len(keys)} adapter arrays, got {len(ndarrays)}")
    set_adapter_arrays(model, to_array_record(dict(zip(keys, ndarrays, strict=True))))
