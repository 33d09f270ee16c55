"""DP-SGD cost on LoRA DPO: step time and peak memory, private / non-private, side by side.

Same model, LoRA rank, batch of preference pairs and optimizer (AdamW) in both arms; the DP arm
is `fedsafe_plugin.training.dp.make_private` (Opacus hooks, per-pair clipping, noise). Step times
are interleaved (one plain step, one DP step, ...) so machine load hits both arms alike; peak
memory is measured in a fresh child process per arm (peak RSS during the steps only).

    python benchmarks/bench_dp.py            # tiny (2x64) and larger (4x256) models
    python benchmarks/bench_dp.py --steps 5  # quicker
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIGS = {
    "tiny (2 layers, hidden 64)": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128),
    "larger (4 layers, hidden 256)": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688),
}
BATCH, RANK, MAX_LENGTH, BETA = 8, 8, 64, 0.1


def _setup(config: str):
    """Tokenizer, LoRA model, one fixed batch of pairs and its reference log-probs."""
    import torch

    from fedsafe_plugin.demo_data import make_client_pairs
    from fedsafe_plugin.training.data import encode_pairs
    from fedsafe_plugin.training.dpo import reference_logps
    from fedsafe_plugin.training.lora import add_lora
    from fedsafe_plugin.training.tiny import TinySpec, build_tiny_model, build_tiny_tokenizer

    torch.manual_seed(0)
    tok = build_tiny_tokenizer()
    model = add_lora(build_tiny_model(TinySpec(**CONFIGS[config]), tok), r=RANK)
    pairs = encode_pairs(tok, [p.as_record() for p in make_client_pairs(1, 3, BATCH)], MAX_LENGTH)
    return model, pairs, reference_logps(model, pairs, tok.pad_token_id), tok.pad_token_id


def _arm(model, pairs, ref, pad_id, private: bool):
    """A `step()` closure for one arm, and a `close()` for the DP wrapper."""
    import torch

    from fedsafe_plugin.privacy.budget import Budget
    from fedsafe_plugin.training.dp import make_private
    from fedsafe_plugin.training.dpo import dpo_loss, pair_logps

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    close = lambda: None  # noqa: E731
    if private:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(len(pairs))), batch_size=BATCH)
        dp = make_private(model, optimizer, loader, Budget(8.0, 1e-3, 1.0, noise_multiplier=1.0))
        model, optimizer, close = dp.model, dp.optimizer, dp.close

    def step() -> None:
        optimizer.zero_grad()
        c, r = pair_logps(model, pairs, pad_id)
        dpo_loss(c, r, ref[:, 0], ref[:, 1], BETA).mean().backward()
        optimizer.step()

    return step, close


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(config: str, private: bool, steps: int) -> dict:
    """Peak RSS (MiB) of the process while running `steps` steps of one arm (after one warm-up)."""
    import warnings

    warnings.simplefilter("ignore")
    model, pairs, ref, pad_id = _setup(config)
    step, close = _arm(model, pairs, ref, pad_id, private)
    step()  # allocate optimizer state and hooks' buffers once
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
    for _ in range(steps):
        step()
    close()
    return {"peak_mib": _rss_kib("VmHWM") / 1024}


def time_arms(config: str, steps: int) -> dict[str, list[float]]:
    """Wall and CPU seconds of each step for each arm, steps interleaved between the two arms.

    On a shared machine other processes inflate wall time; the CPU time of this (single-threaded)
    process, and the fastest step, are the numbers least disturbed by them.
    """
    import warnings

    warnings.simplefilter("ignore")
    model, pairs, ref, pad_id = _setup(config)
    plain, _ = _arm(model, pairs, ref, pad_id, private=False)
    private, close = _arm(copy.deepcopy(model), pairs, ref, pad_id, private=True)
    plain(), private()  # warm up
    times: dict[str, list[float]] = {k: [] for k in ("plain wall", "DP wall", "plain cpu", "DP cpu")}
    for _ in range(steps):
        for arm, fn in (("plain", plain), ("DP", private)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[f"{arm} cpu"].append(time.process_time() - cpu)
            times[f"{arm} wall"].append(time.perf_counter() - wall)
    close()
    return times


def _child(config: str, private: bool, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", config, "--private" if private else "--plain",
         "--steps", str(steps), "--threads", "1"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Measure both configs and write benchmarks/results/dp.{json,md}."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is not inflated by spinning)")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    arm = p.add_mutually_exclusive_group()
    arm.add_argument("--private", action="store_true", help=argparse.SUPPRESS)
    arm.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.private, args.steps)))
        return 0

    from common import write_results

    rows = []
    for config in CONFIGS:
        load = os.getloadavg()[0]
        times = time_arms(config, args.steps)
        t = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        mem_plain = _child(config, False, min(args.steps, 5))["peak_mib"]
        mem_dp = _child(config, True, min(args.steps, 5))["peak_mib"]
        rows.append({
            "model": config, "batch (pairs)": BATCH, "LoRA rank": RANK,
            "plain step CPU s": t["plain cpu"], "DP step CPU s": t["DP cpu"],
            "CPU time ratio": t["DP cpu"] / t["plain cpu"],
            "median CPU ratio": med["DP cpu"] / med["plain cpu"],
            "wall ratio": t["DP wall"] / t["plain wall"],
            "plain peak MiB": mem_plain, "DP peak MiB": mem_dp,
            "memory ratio": mem_dp / mem_plain,
            "load avg": load,
        })
        print(rows[-1], flush=True)
    notes = (
        f"{args.steps} interleaved steps per arm, {args.threads} torch thread(s); step times are the fastest "
        "step's CPU time (least disturbed on this shared machine; 'median CPU ratio' and the fastest-step "
        "'wall ratio' for comparison; 'load avg' is the 1-minute load when the model's run began); DPO with chosen and rejected as two forward passes, "
        f"prompt+response up to {MAX_LENGTH} tokens, AdamW, LoRA on q/k/v/o. The DP arm adds Opacus hooks "
        "(per-pair gradients), flat clipping to C=1 and Gaussian noise (sigma=1). Peak memory: the process's "
        "peak RSS over 5 steps after one warm-up step, in a fresh process per arm (it includes the frozen base "
        "model and Python/torch, so it understates the relative cost of the per-pair gradients). Goal: time ratio <= 1.15."
    )
    notes += (
        "\n\nSteps of the two arms alternate so load from other processes hits both alike; "
        "a ratio below 1 means the difference is within that noise."
    )
    write_results("dp", rows, title="DP-SGD cost on LoRA DPO (private / non-private)", notes=notes,
                  extra={"steps": args.steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
