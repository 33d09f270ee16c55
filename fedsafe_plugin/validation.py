"""Checks on adapter updates, shared by the server wrappers and the client mod.

A reply is rejected for: NaN/inf values, keys or shapes that differ from the arrays the server
sent, or an update (reply minus global) whose L2 norm exceeds a configured bound.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NDArrays = Mapping[str, np.ndarray]
_CLIP_TRIES = 8  # rounding overshoots are tiny: one extra shrink almost always suffices


def update_norm(update: NDArrays, reference: NDArrays) -> float:
    """L2 norm of (update - reference) over all arrays."""
    total = sum(float(np.sum((update[k].astype(np.float64) - reference[k]) ** 2)) for k in reference)
    return total**0.5


def find_problem(update: NDArrays, reference: NDArrays, max_norm: float = 0.0) -> str | None:
    """Why `update` is unusable against `reference` (the global arrays), or None if it is fine."""
    missing, extra = sorted(set(reference) - set(update)), sorted(set(update) - set(reference))
    if missing or extra:
        return f"array keys differ from the global model (missing {missing[:2]}, unexpected {extra[:2]})"
    for key, ref in reference.items():
        arr = update[key]
        if arr.shape != ref.shape:
            return f"array {key!r} has shape {arr.shape}, expected {ref.shape}"
        if not np.issubdtype(arr.dtype, np.number):
            return f"array {key!r} has non-numeric dtype {arr.dtype}"
        if not np.all(np.isfinite(arr)):
            return f"array {key!r} contains NaN or inf"
    if max_norm > 0:
        norm = update_norm(update, reference)
        if norm > max_norm:
            return f"update norm {norm:.4g} exceeds the bound {max_norm:.4g}"
    return None


def clip_update(update: NDArrays, reference: NDArrays, max_norm: float) -> dict[str, np.ndarray]:
    """Scale (update - reference) down to L2 norm <= max_norm (client-side norm bounding).

    The bound holds for the arrays as sent, in their own dtype: rounding back to float32 can push
    an update scaled to exactly the bound just past it, and the server, checking the same bound,
    would then drop it. So the norm is measured after the cast and the scale shrinks until it fits.
    """
    norm = update_norm(update, reference)
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    for _ in range(_CLIP_TRIES):
        out = {k: (reference[k] + scale * (update[k] - reference[k])).astype(update[k].dtype) for k in reference}
        sent = update_norm(out, reference)
        if sent <= max_norm:
            return out
        scale *= max_norm / sent * (1 - 1e-6)
    raise ValueError(f"cannot bound the update to norm {max_norm:.3g}: at this dtype's precision around the "
                     f"global values it stays at {sent:.3g} (raise fedsafe.validate.max-update-norm)")


def as_ndarrays(record) -> dict[str, np.ndarray]:
    """An ArrayRecord as {key: ndarray}."""
    return {k: v.numpy() for k, v in record.items()}


def to_array_record(arrays: NDArrays):
    """{key: ndarray} as an ArrayRecord (Flower wants Array values for a plain dict)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
