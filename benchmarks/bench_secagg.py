"""Secure aggregation cost per client per round: bytes and seconds, side by side in one run.

Rows for adapter sizes P in {100k, 1M} and n in {10, 100} simulated clients:
- plaintext fp32 FedAvg (the baseline: 4P bytes up, a weighted mean on the server);
- fedsafe SecAgg+ run end to end through the in-process grid (real crypto, every message over
  Flower's protobuf wire format), k = auto (2 ceil(log2 n)) and k = ceil(log2 n);
- Flower's legacy SecAgg+ client masking step, with its own functions (quantize, factor_combine,
  ECDH, MT19937 `pseudo_rand_gen`, int64 arrays) for the same k: mask time and upload bytes;
- CKKS with fedsafe's parameters (N=8192, [50, 60], 2^25) and NVFlare's defaults
  (N=8192, [60, 40, 40], 2^40): client encrypt, server ciphertext sum over n clients, client decrypt.
Run: `python benchmarks/bench_secagg.py [--quick]` (quick: P = 100k and n = 10 only).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, write_results  # noqa: E402

GOALS = "Goals: SecAgg+ upload <= 1.1x fp32; client masking <= 0.05 s for 1M params, n = 100, k ~ log n; CKKS <= 8x fp32."


def _update(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    half = size // 2
    return {"lora_A": rng.uniform(-0.01, 0.01, half).astype(np.float32), "lora_B": rng.uniform(-0.01, 0.01, size - half).astype(np.float32)}


def plaintext(size: int, n: int) -> dict:
    """FedAvg baseline: fp32 upload, server weighted mean of n arrays."""
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=size).astype(np.float32) for _ in range(min(n, 10))]
    weights = rng.integers(1, 100, size=n).astype(np.float64)

    def server() -> None:
        acc = np.zeros(size, dtype=np.float64)
        for i, w in enumerate(weights):
            acc += w * vectors[i % len(vectors)]
        _ = (acc / weights.sum()).astype(np.float32)

    return {"bytes_up": 4 * size, "client_s": 0.0, "mask_s": 0.0, "server_s": median_seconds(server, repeat=3)}


def fedsafe_secagg(size: int, n: int, neighbours: int) -> dict:
    """One full SecAgg+ round through the in-process grid; per-client and server time split out."""
    from flwr.app import Array, ArrayRecord

    from fedsafe_plugin.config import FedSafeConfig, SanitizeConfig, SecAggConfig
    from fedsafe_plugin.privacy.secagg import make_server_aggregator, primitives, secagg_mod
    from fedsafe_plugin.privacy.secagg.client import masked_input
    from fedsafe_plugin.privacy.secagg.graph import plan
    from fedsafe_plugin.privacy.secagg.inprocess import LocalGrid, fixed_update_app, run_round, stage_name

    rng = np.random.default_rng(1)
    nodes = list(range(1, n + 1))
    update = _update(rng, size)  # the same update everywhere: the cost does not depend on values
    client_time: dict[tuple[str, int], float] = defaultdict(float)

    def timed_mod(msg, context, call_next):
        app_time = [0.0]

        def call_app(m, c):
            start = time.perf_counter()
            reply = call_next(m, c)
            app_time[0] += time.perf_counter() - start
            return reply

        start = time.perf_counter()
        reply = secagg_mod(msg, context, call_app)
        client_time[(stage_name(msg), msg.metadata.dst_node_id)] += time.perf_counter() - start - app_time[0]
        return reply

    grid = LocalGrid({m: fixed_update_app(update, float(m)) for m in nodes}, mods=[timed_mod], keep_received=False)
    grid_time = [0.0]
    deliver = grid.send_and_receive

    def timed_deliver(messages, *, timeout=None):
        start = time.perf_counter()
        replies = deliver(messages, timeout=timeout)
        grid_time[0] += time.perf_counter() - start
        return replies

    grid.send_and_receive = timed_deliver  # type: ignore[method-assign]
    config = FedSafeConfig(sanitize=SanitizeConfig(enabled=False), secagg=SecAggConfig(mode="secagg+", neighbours=neighbours))
    server = make_server_aggregator(config.secagg)
    global_arrays = ArrayRecord({k: Array(np.zeros_like(v)) for k, v in update.items()})
    start = time.perf_counter()
    result = run_round(server, grid, global_arrays, config.to_flat())
    wall = time.perf_counter() - start
    assert result.arrays is not None, result.reason
    up = defaultdict(int)
    for (stage, node), size_b in grid.received_bytes.items():
        up[node] += size_b
    per_client = defaultdict(float)
    for (stage, node), secs in client_time.items():
        per_client[node] += secs
    k = plan(n, neighbours, config.secagg.min_survivors).k
    vector = np.concatenate([update[key].ravel() for key in sorted(update)])
    pair_keys = [(primitives.new_seed(), bool(i % 2)) for i in range(k)]
    return {
        "k": k,
        "bytes_up": float(np.mean(list(up.values()))),
        "client_s": float(np.mean(list(per_client.values()))),
        "mask_s": median_seconds(lambda: masked_input(vector, 0.01, primitives.new_seed(), pair_keys, 0.5, 24), repeat=5),
        "server_s": wall - grid_time[0],
    }


def flower_legacy(size: int, k: int) -> dict:
    """Flower's legacy SecAgg+ client masking (its own helpers, defaults of SecAggPlusWorkflow)."""
    from flwr.common import ndarray_to_bytes
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_combine, parameters_addition, parameters_mod, parameters_multiply, parameters_subtraction)
    from flwr.common.secure_aggregation.quantization import quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import generate_key_pairs

    clipping_range, target_range, mod_range, max_weight = 8.0, 4194304, 4294967296, 1000
    params = list(_update(np.random.default_rng(2), size).values())
    sk, _ = generate_key_pairs()
    peers = [generate_key_pairs()[1] for _ in range(k)]
    seed = np.random.default_rng(3).bytes(32)

    def mask() -> list[np.ndarray]:
        q_ratio = round(100 / max_weight * target_range)
        quantized = factor_combine(q_ratio, quantize(parameters_multiply(params, q_ratio / target_range), clipping_range, target_range))
        dims = [a.shape for a in quantized]
        quantized = parameters_addition(quantized, pseudo_rand_gen(seed, mod_range, dims))
        for i, pk in enumerate(peers):
            pairwise = pseudo_rand_gen(generate_shared_key(sk, pk), mod_range, dims)
            quantized = (parameters_addition if i % 2 else parameters_subtraction)(quantized, pairwise)
        return parameters_mod(quantized, mod_range)

    masked = mask()
    return {"k": k, "bytes_up": sum(len(ndarray_to_bytes(a)) for a in masked), "mask_s": median_seconds(mask, repeat=3), "client_s": float("nan"), "server_s": float("nan")}


def ckks(size: int, n: int, params: dict | None) -> dict:
    """CKKS: client encrypt (+ serialize), server sum of n ciphertext records, client decrypt."""
    from fedsafe_plugin.privacy.secagg import ckks as C

    secret_file, public_file = C.generate(**params) if params else C.generate()
    secret = C.CKKSKeys(*reversed(_load(secret_file)))
    public = C.CKKSKeys(*reversed(_load(public_file)))
    arrays = _update(np.random.default_rng(4), size)
    start = time.perf_counter()
    record = C.encrypt(secret, arrays, 10.0, n)
    encrypt_s = time.perf_counter() - start
    checked, unchecked = [], []
    for _ in range(2):  # alternate, best of two: the first pass over n ciphertexts pays for memory warm-up
        start = time.perf_counter()
        total = C.add(public, [record] * n)
        checked.append(time.perf_counter() - start)
        start = time.perf_counter()
        _add_unchecked(public, [record] * n)
        unchecked.append(time.perf_counter() - start)
    start = time.perf_counter()
    C.decrypt(secret, total)
    decrypt_s = time.perf_counter() - start
    return {"bytes_up": sum(len(a.data) for a in record.values()), "client_s": encrypt_s + decrypt_s, "mask_s": encrypt_s,
            "server_s": min(checked), "server_unchecked_s": min(unchecked)}


def _add_unchecked(keys, records: list) -> list:
    """The baseline for C.add's per-client checks: parse and add in place, nothing else."""
    import tenseal as ts

    from fedsafe_plugin.privacy.secagg import ckks as C

    total = None
    for record in records:
        vectors = [ts.ckks_vector_from(keys.context, c) for c in C._chunks(record, C._header(record))]
        if total is None:
            total = vectors
            continue
        for acc, v in zip(total, vectors):
            acc.add_(v)
    return total


def _load(data: bytes):
    import tenseal as ts

    from fedsafe_plugin.privacy.secagg.ckks import parse

    header, blob = parse(data)
    return header, ts.context_from(blob)


def main(argv: list[str] | None = None) -> int:
    """Measure every method for each (P, n) and write results/secagg.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="P = 100k and n = 10 only")
    args = parser.parse_args(argv)
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    clients = [10] if args.quick else [10, 100]
    nvflare = {"poly": 8192, "coeff": (60, 40, 40), "scale_bits": 40}
    rows = []
    for size in sizes:
        for n in clients:
            log_k = math.ceil(math.log2(n))
            base = plaintext(size, n)
            methods = [("plaintext fp32", base)]
            for label, k in (("fedsafe SecAgg+ k=auto", 0), (f"fedsafe SecAgg+ k=log2", log_k)):
                methods.append((label, fedsafe_secagg(size, n, k)))
            methods.append(("Flower legacy SecAgg+ (mask step)", flower_legacy(size, methods[-1][1]["k"])))
            methods.append(("CKKS fedsafe [50,60] 2^25", ckks(size, n, None)))
            methods.append(("CKKS NVFlare [60,40,40] 2^40", ckks(size, n, nvflare)))
            for label, m in methods:
                rows.append({
                    "params": size, "clients": n, "method": label, "k": m.get("k", ""),
                    "bytes_up_per_client": int(m["bytes_up"]), "x_fp32": m["bytes_up"] / base["bytes_up"],
                    "client_mask_or_encrypt_s": m["mask_s"], "client_total_s": m["client_s"], "server_s": m["server_s"],
                    "server_unchecked_s": m.get("server_unchecked_s", float("nan")),
                })
                print(rows[-1], flush=True)
    notes = "\n".join([
        GOALS,
        "bytes_up_per_client: everything one client uploads in a round (SecAgg+: all stage replies as protobuf wire bytes;",
        "Flower legacy: its int64 masked arrays only; CKKS: the ciphertext record). x_fp32 = bytes / (4 P).",
        "client_mask_or_encrypt_s (median of repeats): SecAgg+ `masked_input` (fixed-point encoding + k+1 ChaCha20 masks) /",
        "Flower's quantise + k+1 MT19937 masks /",
        "CKKS encryption. client_total_s: all client-side secagg work of the round (not training); CKKS: encrypt + decrypt.",
        "server_s: server-side work of the round (SecAgg+: stage routing, Shamir reconstruction, unmasking; CKKS: ciphertext sum",
        "with the per-client checks, best of two). server_unchecked_s (CKKS only): the same sum without the checks (parse + add),",
        "alternated with the checked sum in one process: the baseline for what the checks cost.",
        "Flower legacy full workflow (LegacyContext + DefaultWorkflow) was not run: it needs the legacy strategy path; its",
        "client masking step is what dominates and is measured with its own functions.",
    ])
    load = [round(x, 1) for x in os.getloadavg()]
    notes += f"\nLoad average during the run (1/5/15 min, shared machine): {load}; seconds are inflated accordingly, ratios in one run are comparable."
    write_results("secagg", rows, title="Secure aggregation: bytes and seconds per client per round", notes=notes, extra={"loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
