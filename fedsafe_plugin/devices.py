"""Torch devices: where a model runs, and a checked device from a user's `--device` string."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU if it has none): batches are built there."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))


def resolve_device(name: str) -> torch.device:
    """`torch.device(name)`, or ValueError for a malformed name or a GPU that torch cannot see."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"{name!r} is not a torch device ({exc})") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device
