"""Fixed-point encoding of weighted updates for the modular uint32 sum.

Client k sends q_k = SR(a_k * clip(u_k, -r, r) * L / r) mod 2^32 with a_k = n_k / N (N = total
weight of the clients asked to mask), L = 2^(bits-1) - 1 and SR unbiased stochastic rounding
(floor(x + U[0,1))). Since sum a_k = 1, |sum q_k| <= L + m < 2^31 for m clients, so the int32
reading of the uint32 sum is exact. Decoding gives sum_k a_k clip(u_k) with error below m*r/L
per coordinate (each SR error is in (-1, 1) and has mean 0); dividing by sum of the survivors'
a_k gives their weighted mean.
"""

from __future__ import annotations

import numpy as np


def levels(bits: int) -> int:
    """L: the integer that encodes +r for a client of weight share 1."""
    return 2 ** (bits - 1) - 1


def encode(update: np.ndarray, share: float, clip_range: float, bits: int, rng: np.random.Generator) -> np.ndarray:
    """SR(share * clip(update) * L / r) as uint32 (two's complement)."""
    scaled = update.astype(np.float64)  # in place from here on: this runs on 1M-value adapters
    np.clip(scaled, -clip_range, clip_range, out=scaled)
    scaled *= share * levels(bits) / clip_range
    scaled += rng.random(scaled.shape)
    np.floor(scaled, out=scaled)
    return scaled.astype(np.int32).view(np.uint32)  # |values| <= 2^23 + 1 fit int32


def decode(total: np.ndarray, clip_range: float, bits: int) -> np.ndarray:
    """The float64 value of a uint32 sum of `encode` outputs (sum of share * clip(update))."""
    return total.view(np.int32).astype(np.float64) * (clip_range / levels(bits))


def error_bound(clients: int, clip_range: float, bits: int) -> float:
    """Worst-case |error| per coordinate of the decoded sum of `clients` encodings."""
    return clients * clip_range / levels(bits)
