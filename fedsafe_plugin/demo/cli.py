"""`fedsafe demo`: a poisoned federation with and without sanitization, in Flower's simulation runtime."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any


def parse_set(items: list[str]) -> dict[str, Any]:
    """`fedsafe.x.y=v` strings as a run-config dict (true/false, numbers, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.startswith("fedsafe."):
            raise argparse.ArgumentTypeError(f"--set expects fedsafe.<section>.<name>=<value>, got {item!r}")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        out[key] = value
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fedsafe demo`."""
    p = subparsers.add_parser(
        "demo",
        help="poisoned federation with vs without FedDetox (no data files, no network)",
        description="Runs ~10 simulated Flower clients on the package's synthetic preference data (some "
        "poisoned) twice: with sanitization + DP + secure aggregation, and without sanitization. "
        "Prints per-round progress and a before/after table; writes report.json, report.md and plots.",
    )
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--poison-fraction", type=float, default=0.3)
    p.add_argument("--pairs-per-client", type=int, default=32)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=2e-2, help="local learning rate (AdamW on the LoRA adapter)")
    p.add_argument("--model", default="tiny", help="'tiny', 'smollm2' or an HF id/path")
    p.add_argument("--data-dir", default=None, help="public safety data folder (holding normalized/) instead of synthetic data")
    p.add_argument("--eval-limit", type=int, default=0, help="contrasts per evaluation set (0 = the whole synthetic suite, or 100 with --data-dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="fedsafe.KEY=VALUE",
                   help="any fedsafe setting, e.g. --set fedsafe.privacy.epsilon=4 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="fedsafe-demo", help="output folder")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run both arms, print the table, write the report."""
    from fedsafe_plugin.config import FedSafeConfig
    from fedsafe_plugin.demo.plan import DEMO_ARMS, Plan
    from fedsafe_plugin.demo.report import markdown, write_report
    from fedsafe_plugin.demo.runner import run_arms

    try:
        overrides = parse_set(args.overrides)
        FedSafeConfig.from_run_config(overrides)
        plan = Plan(
            clients=args.clients, rounds=args.rounds, poison_fraction=args.poison_fraction, model=args.model,
            pairs_per_client=args.pairs_per_client, local_steps=args.local_steps, lr=args.lr, seed=args.seed,
            data_dir=args.data_dir, eval_limit=args.eval_limit, overrides=overrides,
        )
    except (argparse.ArgumentTypeError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"fedsafe demo: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    print(f"fedsafe demo: {plan.clients} clients, {plan.rounds} rounds, {100 * plan.poison_fraction:.0f}% poisoned; "
          f"writing to {out}", flush=True)
    try:
        results = run_arms(plan, DEMO_ARMS, lambda line: print(line, flush=True))
    except RuntimeError as exc:  # a run that trained nothing: no report, which would look like a result
        print(f"fedsafe demo: {exc}", file=sys.stderr)
        return 1
    command = "fedsafe demo " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["demo"] else ""
    report = write_report(out, "fedsafe demo: poisoned federation, with vs without sanitization", plan, results, command)
    print()
    print(markdown(report))
    print(f"wrote {out / 'report.json'}, {out / 'report.md'} and {', '.join(report['plots'])}")
    return 0
