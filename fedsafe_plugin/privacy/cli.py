"""`fedsafe budget`: the noise multiplier a plan needs, and the epsilon spent after each round."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fedsafe budget` to the `fedsafe` command line."""
    p = subparsers.add_parser(
        "budget",
        help="Plan a sample-level DP budget: noise multiplier and epsilon per round.",
        description="Derive the DP-SGD noise multiplier for a plan (Opacus's search), or give one, "
        "and print the cumulative epsilon after each round (Poisson sampling, per-record clipping).",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--epsilon", type=float, help="Target epsilon for the whole plan (derives sigma).")
    target.add_argument("--noise-multiplier", type=float, help="Fixed noise multiplier sigma (prints the epsilon it spends).")
    p.add_argument("--delta", type=float, required=True, help="Delta of the guarantee (at most 1/N).")
    p.add_argument("--rounds", type=int, required=True, help="Rounds the client expects to join.")
    p.add_argument("--local-steps", type=int, required=True, help="DP-SGD steps per round.")
    p.add_argument("--sample-rate", type=float, required=True, help="Poisson sample rate q = 1/ceil(N/batch).")
    p.add_argument("--accountant", choices=("prv", "rdp"), default="prv", help="Opacus accountant (default prv).")
    p.add_argument("--records", type=int, default=None, help="Local records N (checks delta <= 1/N).")
    p.set_defaults(handler=run_budget)


def run_budget(args: argparse.Namespace) -> int:
    """Print sigma and the per-round epsilon; a bad input prints a clear error and returns 2."""
    from fedsafe_plugin.privacy.budget import Budget, BudgetError, Plan, epsilon_schedule, noise_multiplier_for

    try:
        plan = Plan(args.rounds, args.local_steps, args.sample_rate)
        if args.noise_multiplier is not None:
            if not args.noise_multiplier > 0:
                raise BudgetError(f"noise multiplier must be > 0 to spend a finite epsilon, got {args.noise_multiplier}")
            budget = Budget(1.0, args.delta, noise_multiplier=args.noise_multiplier, accountant=args.accountant)
        else:
            budget = Budget(args.epsilon, args.delta, accountant=args.accountant)
        if args.records is not None:
            budget.check_dataset(args.records)
        sigma = noise_multiplier_for(budget, plan)
    except BudgetError as exc:
        print(f"fedsafe budget: error: {exc}", file=sys.stderr)
        return 2
    schedule = epsilon_schedule(sigma, plan, budget.delta, budget.accountant)
    source = "given" if args.noise_multiplier is not None else f"derived for epsilon={budget.epsilon:g}"
    print(f"noise multiplier: {sigma:.6g} ({source}, accountant {budget.accountant})")
    print(f"plan: {plan.rounds} rounds x {plan.local_steps} steps, sample rate {plan.sample_rate:g}, delta {budget.delta:g}")
    print("round  steps  epsilon")
    for r, eps in enumerate(schedule, start=1):
        print(f"{r:>5}  {r * plan.local_steps:>5}  {eps:.4f}")
    return 0
