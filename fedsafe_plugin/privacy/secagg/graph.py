"""Who masks with whom and how many must survive: the SecAgg+ k-regular graph and thresholds.

Both sides compute these from the same inputs (the round's node set, its public keys and the
config), so a client never takes the server's word for its neighbours or thresholds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """The round's graph degree k, Shamir threshold s (of k+1 holders) and survivor floor t."""

    k: int
    shamir: int
    min_survivors: int


def plan(n: int, neighbours: int, fraction: float) -> Plan:
    """k, s and t for `n` clients; s > (k+1)/2 always, so no two disjoint share sets recover.

    k = `neighbours` (0 = auto: 2*ceil(log2 n)), at least ceil(log2 n), at most n - 1, and even
    when n is odd (a k-regular graph needs n*k even). s = max(floor((k+1)/2)+1, ceil(fraction*(k+1))).
    t = max(ceil(fraction*n), s): fewer survivors than s could never answer a reconstruction.
    """
    if n < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {n}")
    floor_k = max(1, math.ceil(math.log2(n)))
    k = neighbours if neighbours > 0 else 2 * floor_k
    k = min(n - 1, max(k, floor_k))
    if (n * k) % 2:
        k += 1  # n is odd here, so k < n - 1 (both n - 1 and the bound are even)
    holders = k + 1
    shamir = max(holders // 2 + 1, math.ceil(fraction * holders))
    return Plan(k=k, shamir=shamir, min_survivors=max(math.ceil(fraction * n), shamir))


def neighbours(nodes: Sequence[int], k: int, seed: bytes) -> dict[int, list[int]]:
    """A Harary graph H(k, n) on the nodes in a seed-derived order: i ~ i±1..k/2 (+ i+n/2 if k odd)."""
    order = sorted(nodes, key=lambda node: hashlib.sha256(seed + str(node).encode()).digest())
    n = len(order)
    offsets = set(range(1, k // 2 + 1)) | {n - j for j in range(1, k // 2 + 1)}
    if k % 2:
        offsets.add(n // 2)
    return {order[i]: sorted(order[(i + j) % n] for j in offsets) for i in range(n)}


def graph_seed(session: bytes, public_keys: dict[int, tuple[bytes, bytes]]) -> bytes:
    """Graph seed bound to the session and every advertised public key (fixed once keys are out)."""
    h = hashlib.sha256(b"fedsafe-secagg-graph" + session)
    for node in sorted(public_keys):
        h.update(str(node).encode() + b":" + public_keys[node][0] + public_keys[node][1])
    return h.digest()
