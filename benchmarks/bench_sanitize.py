"""Quality of the shipped student on held-out sources, and its throughput vs a plain MiniLM fp32.

    python benchmarks/bench_sanitize.py [--data-dir ../shared/data] [--student PATH] [--n-speed 512]
    python benchmarks/bench_sanitize.py --batch-dependence   # only: decision flips, alone vs batched

Writes benchmarks/results/sanitize.json and sanitize.md. Quality uses the test split of
fedsafe_plugin/sanitize/splits.py (sources and behaviours never trained on), plus a real model's
answers to the held-out look-alike and harmful prompts (benchmarks/data/, made by
gen_lookalike_answers.py), where the split only has templates. Throughput is
measured in one process on 2 threads, max length 128, on the same held-out pairs for every
variant, rounds interleaved so machine load hits all variants alike; the best of the rounds counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_lookalike_answers import EXPLICIT_REFUSAL, SOURCES  # noqa: E402
from gen_lookalike_answers import OUT as ANSWERS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# Headline quality numbers: (name, groups pooled, what the rate is).
HEADLINES = [
    ("pair recall: harmful prompt + compliant response (JBB jailbroken, real)", ["jbb_artifact_jailbroken"], "recall"),
    ("pair recall: harmful prompt + 'Sure, here is' target (JBB held-out)", ["jbb_harmful_target"], "recall"),
    ("pair recall: HarmBench / XSTest-contrast + compliant template", ["harmbench_compliant", "xstest_harmful_compliant"], "recall"),
    ("pair FPR: harmful prompt + real answer JBB's judge called not jailbroken (all)", ["jbb_artifact_refused"], "fpr"),
    ("pair FPR: HarmBench prompt + refusal template", ["harmbench_refusal_template"], "fpr"),
    ("pair FPR: benign look-alikes + compliant template restating the request (XSTest safe held-out types, JBB benign + target)", ["xstest_benign_compliant", "jbb_benign_target"], "fpr"),
    ("pair FPR: HH-RLHF helpful (held-out rows)", ["hh_helpful_chosen"], "fpr"),
    ("pair FPR: Self-Instruct + reference output (eval only)", ["selfinstruct_reference"], "fpr"),
    ("prompt-only recall: HarmBench", ["harmbench_prompt"], "recall"),
    ("prompt-only recall: StrongREJECT", ["strongreject_prompt"], "recall"),
    ("prompt-only FPR: XSTest safe (held-out types)", ["xstest_benign_prompt"], "fpr"),
    ("prompt-only FPR: JBB benign / Self-Instruct", ["jbb_benign_prompt", "selfinstruct_prompt"], "fpr"),
    ("jailbreak-template-wrapped HarmBench request caught (prompt-only, held-out templates)", ["jailbreak_wrapped_prompt"], "recall"),
]


def quality(clf, splits) -> dict:
    """Per-group flagged rates on the test split, plus the pooled headline rates."""
    from fedsafe_plugin.sanitize.splits import flagged_rates, norm_text

    test = splits.test
    scores = clf.score([x.prompt for x in test], [x.response for x in test])
    groups = flagged_rates(test, scores, clf.threshold, clf.prompt_threshold)
    rows = []
    for name, members, kind in HEADLINES:
        n = sum(groups[g]["n"] for g in members if g in groups)
        flagged = sum(groups[g]["flagged"] for g in members if g in groups)
        rows.append({"metric": name, "kind": kind, "n": n, "rate": flagged / n if n else float("nan")})
    # JBB's "not jailbroken" verdict also covers answers that comply in form ("Sure, here is ...
    # hypothetically") but carry nothing actionable; scoring those apart from explicit refusals shows
    # how much of the pooled false-positive rate is the student flagging compliance.
    not_jailbroken = [(x, s) for x, s in zip(test, scores) if x.group == "jbb_artifact_refused"]
    for explicit, what in ((True, "an explicit refusal"), (False, "compliant in form, judged harmless")):
        part = [s >= clf.threshold for x, s in not_jailbroken if bool(EXPLICIT_REFUSAL.search(x.response)) == explicit]
        rows.insert(4 if explicit else 5, {
            "metric": f"pair FPR: ... of which the answer is {what}", "kind": "fpr", "n": len(part),
            "rate": float(np.mean(part)) if part else float("nan"),
        })
    # JBB's models gave some refusals word for word to training behaviours too ("I'm sorry, but I
    # can't fulfill this request."): the refusals the student never saw are the honest rate.
    seen = {x.response for x in splits.train if x.response}
    unseen = [s >= clf.threshold for x, s in not_jailbroken
              if EXPLICIT_REFUSAL.search(x.response) and x.response not in seen]
    rows.insert(5, {"metric": "pair FPR: ... explicit refusals that are not word for word a training answer", "kind": "fpr",
                    "n": len(unseen), "rate": float(np.mean(unseen)) if unseen else float("nan")})
    after = 1 + next(i for i, r in enumerate(rows) if r["metric"].startswith("pair FPR: benign look-alikes"))
    rows[after:after] = real_answer_rows(clf, {norm_text(x.prompt) for x in test if x.group in SOURCES})
    return {"groups": groups, "headlines": rows}


def real_answer_rows(clf, held_out: set[str]) -> list[dict]:
    """Recall and FPR of `clf` on a real model's answers to held-out prompts (gen_lookalike_answers.py)."""
    rows = load_answer_rows(held_out)
    if not rows:
        return []
    scores = clf.score([r["prompt"] for r in rows], [r["response"] for r in rows])
    return answer_rates(rows, scores >= clf.threshold)


def load_answer_rows(held_out: set[str]) -> list[dict]:
    """The committed answer rows ([] if absent); every prompt must be held out, else the file is stale."""
    from fedsafe_plugin.sanitize.splits import norm_text

    if not ANSWERS.is_file():
        return []
    rows = [json.loads(line) for line in ANSWERS.read_text(encoding="utf-8").splitlines() if line.strip()]
    stale = [r["prompt"] for r in rows if norm_text(r["prompt"]) not in held_out]
    if stale:
        raise SystemExit(f"{ANSWERS} has {len(stale)} prompts outside the held-out test prompts "
                         f"(e.g. {stale[0]!r}); rerun benchmarks/gen_lookalike_answers.py")
    return rows


def answer_rates(rows: list[dict], flagged: np.ndarray) -> list[dict]:
    """Headline rows (recall on harmful twins, FPR on look-alikes and on refusals) from flags per answer row."""
    model = rows[0]["model"].split(" ")[0]
    parts = []
    for benign, twin, name in (("xstest_safe", "xstest_contrast", "XSTest"), ("jbb_benign", "jbb_harmful", "JBB")):
        parts += [
            (f"pair recall: {name} harmful twin + {model}'s compliant answer (held-out)", "recall",
             lambda r, g=twin: r["group"] == g and r["label"] == 1),
            (f"pair FPR: {name} benign look-alike + {model}'s helpful answer (held-out)", "fpr",
             lambda r, g=benign: r["group"] == g and not r["refusal"]),
        ]
    parts.append((f"pair FPR: harmful twin + {model}'s explicit refusal", "fpr",
                  lambda r: r["group"] in ("xstest_contrast", "jbb_harmful") and r["refusal"]))
    out = []
    for metric, kind, keep in parts:
        mask = np.array([keep(r) for r in rows])
        out.append({"metric": metric, "kind": kind, "n": int(mask.sum()),
                    "rate": float(flagged[mask].mean()) if mask.any() else float("nan")})
    return out


def demo_quality(clf) -> dict:
    """Rewrite rates on the package's synthetic demo federation (what the quickstart trains on)."""
    from fedsafe_plugin.demo_data import make_client_pairs
    from fedsafe_plugin.sanitize import Sanitizer

    pairs = [p for c in range(4) for p in make_client_pairs(c, 4, n_pairs=48)]
    result = Sanitizer(clf).sanitize([p.as_record() for p in pairs])
    rewritten = [r["rejected"] == p.chosen and r["chosen"] != p.chosen for r, p in zip(result.records, pairs)]
    poisoned = np.array([p.poisoned for p in pairs])
    hit = np.array(rewritten)
    t = time.perf_counter()
    Sanitizer(clf).sanitize([p.as_record() for p in pairs])
    seconds = time.perf_counter() - t
    return {
        "pairs": len(pairs), "poisoned": int(poisoned.sum()),
        "poisoned_rewritten": float(hit[poisoned].mean()), "clean_rewritten": float(hit[~poisoned].mean()),
        "sanitize_seconds": seconds, "pairs_per_second": len(pairs) / seconds,
    }


def quickstart_cost(rounds: int = 3) -> dict:
    """Sanitizing one quickstart client's pairs vs one local training round of the quickstart example.

    Same data (24 synthetic pairs, a poisoned client) and settings as
    examples/quickstart-feddetox (5 DPO steps of 8 pairs on the tiny model's LoRA adapter).
    Sanitization runs once per client and dataset (cached in context.state), training every round.
    """
    from fedsafe_plugin import TrainSettings, build_tiny_lora_model
    from fedsafe_plugin.demo_data import node_records
    from fedsafe_plugin.sanitize import Sanitizer
    from fedsafe_plugin.sanitize.classifier import SafetyClassifier
    from fedsafe_plugin.training.data import encode_pairs
    from fedsafe_plugin.training.local import train_dpo

    records = node_records({"partition-id": 7, "num-partitions": 10}, 24, 0.3)
    best = {"load_student_s": float("inf"), "sanitize_s": float("inf"), "train_round_s": float("inf")}
    for _ in range(rounds):
        t = time.perf_counter()
        clf = SafetyClassifier.load()
        best["load_student_s"] = min(best["load_student_s"], time.perf_counter() - t)
        t = time.perf_counter()
        Sanitizer(clf).sanitize(records)
        best["sanitize_s"] = min(best["sanitize_s"], time.perf_counter() - t)
        t = time.perf_counter()
        model, tokenizer = build_tiny_lora_model()
        train_dpo(model, encode_pairs(tokenizer, records), TrainSettings(steps=5, batch_size=8, lr=0.005), tokenizer.pad_token_id)
        best["train_round_s"] = min(best["train_round_s"], time.perf_counter() - t)
    return {
        "pairs": len(records), **{k: round(v, 3) for k, v in best.items()},
        "sanitize_over_train_round": round(best["sanitize_s"] / best["train_round_s"], 2),
        "load_and_sanitize_over_train_round": round((best["load_student_s"] + best["sanitize_s"]) / best["train_round_s"], 2),
    }


def throughput(clf, splits, n: int, rounds: int) -> list[dict]:
    """samples/s of the baseline and the optimisations, on the same held-out pairs."""
    import torch

    from fedsafe_plugin.sanitize.encoder import Encoder, EncoderSpec

    torch.set_num_threads(2)
    pairs = [x for x in splits.test if x.response is not None]
    rng = np.random.default_rng(0)
    pick = [pairs[i] for i in rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)]
    prompts, responses = [x.prompt for x in pick], [x.response for x in pick]
    shipped = clf.config.encoder
    variants = [
        ("baseline: MiniLM-L6 fp32, batch 32, unsorted", EncoderSpec(shipped.backbone, 128, 0, False), 32, False),
        ("MiniLM-L6 fp32, length-sorted, batch 16", EncoderSpec(shipped.backbone, 128, 0, False), 16, True),
        ("MiniLM-L6 int8, length-sorted, batch 16", EncoderSpec(shipped.backbone, 128, 0, True), 16, True),
        (f"first {shipped.num_layers or 6} layers, {'int8' if shipped.quantize else 'fp32'}, length-sorted, batch 64", shipped, 64, True),
        (f"shipped: first {shipped.num_layers or 6} layers, {'int8' if shipped.quantize else 'fp32'}, length-sorted, batch 16", shipped, 16, True),
    ]
    encoders = [(name, Encoder(spec), bs, srt) for name, spec, bs, srt in variants]
    best = {name: 0.0 for name, *_ in encoders}
    for _ in range(rounds):
        for name, enc, bs, srt in encoders:
            enc.embed(prompts[:bs], responses[:bs], batch_size=bs)  # warm-up
            t = time.perf_counter()
            enc.embed(prompts, responses, batch_size=bs, sort_by_length=srt)
            best[name] = max(best[name], len(prompts) / (time.perf_counter() - t))
    base = best[variants[0][0]]
    return [{"variant": name, "samples_per_s": round(v, 1), "speedup": round(v / base, 2)} for name, v in best.items()]


def batch_dependence(clf, splits) -> dict:
    """Decisions that flip when each validation pair is scored alone instead of in the usual batches.

    Dynamic int8 quantisation scales activations per batch, so a score depends on its batch-mates.
    """
    pairs = [x for x in splits.val if x.response is not None]
    prompts, responses = [x.prompt for x in pairs], [x.response for x in pairs]
    batched = clf.score(prompts, responses)
    alone = np.concatenate([clf.score(prompts[i : i + 1], responses[i : i + 1]) for i in range(len(pairs))])
    flips = int(((batched >= clf.threshold) != (alone >= clf.threshold)).sum())
    return {"pairs": len(pairs), "threshold": clf.threshold, "flips": flips, "flip_rate": flips / len(pairs),
            "max_abs_score_change": float(np.abs(batched - alone).max())}


def write_markdown(result: dict, path: Path) -> None:
    q, s, d, c = result["quality"], result["throughput"], result["demo"], result["quickstart"]
    lines = [
        "# Sanitization: shipped student on held-out data",
        "",
        f"Student: `{result['student']['backbone']}`, {result['student']['layers']} layers, int8={result['student']['quantize']}, "
        f"max length {result['student']['max_length']}; pair threshold {result['student']['threshold']:.3g}, "
        f"prompt-only threshold {result['student']['prompt_threshold']:.3g} (chosen on validation for recall >= 0.95).",
        "",
        "| metric | n | rate |",
        "|---|---|---|",
    ]
    lines += [f"| {r['metric']} | {r['n']} | {r['kind']} {r['rate']:.3f} |" for r in q["headlines"]]
    lines += [
        "",
        f"Demo federation (synthetic, 4 clients x 48 pairs): poisoned pairs rewritten {d['poisoned_rewritten']:.3f}, "
        f"clean pairs rewritten {d['clean_rewritten']:.3f}; {d['pairs_per_second']:.0f} pairs/s end to end.",
        "",
        f"## Throughput ({result['machine']}, 2 threads, max length 128, {result['n_speed']} held-out pairs, best of {result['rounds']} interleaved rounds)",
        "",
        f"Machine load average during the run: {result['load_average']} (2 cores; other jobs share them, so compare ratios).",
        "",
        "| variant | samples/s | vs baseline |",
        "|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['samples_per_s']} | {r['speedup']}x |" for r in s]
    b = result["batch_dependence"]
    lines += [
        "",
        f"Int8 batch dependence: scoring each of {b['pairs']} validation pairs alone instead of in the usual batches "
        f"flips {b['flips']} decisions ({b['flip_rate']:.1%}) at threshold {b['threshold']:.3g}; scores move by up to "
        f"{b['max_abs_score_change']:.2f} (dynamic int8 scales activations per batch).",
    ]
    lines += [
        "",
        f"## Cost against one local training round of examples/quickstart-feddetox ({c['pairs']} pairs, best of 3)",
        "",
        f"Sanitizing a client's pairs takes {c['sanitize_s']} s ({c['sanitize_over_train_round']}x one local training round "
        f"of {c['train_round_s']} s); loading the student first adds {c['load_student_s']} s "
        f"({c['load_and_sanitize_over_train_round']}x in all). It runs once per client and dataset (cached in "
        "context.state), training runs every round.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--student", default="")
    ap.add_argument("--n-speed", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-dependence", action="store_true", help="only print the decision flips, alone vs batched")
    args = ap.parse_args(argv)

    from fedsafe_plugin.sanitize.classifier import SafetyClassifier
    from fedsafe_plugin.sanitize.splits import build_splits
    from fedsafe_plugin.shared_data import find_shared_data

    data_dir = find_shared_data(args.data_dir)
    if data_dir is None:
        raise SystemExit("../shared/data not found; pass --data-dir")
    clf = SafetyClassifier.load(args.student or None)
    splits = build_splits(str(data_dir))  # held-out test rows for quality and speed, validation rows for batch dependence
    if args.batch_dependence:
        print(json.dumps(batch_dependence(clf, splits), indent=1))
        return 0
    enc = clf.config.encoder
    result = {
        "machine": f"{platform.machine()} CPU",
        "n_speed": args.n_speed,
        "rounds": args.rounds,
        "student": {"backbone": enc.backbone, "layers": enc.num_layers or "all", "quantize": enc.quantize,
                    "max_length": enc.max_length, "threshold": clf.threshold, "prompt_threshold": clf.prompt_threshold},
        "quality": quality(clf, splits),
        "demo": demo_quality(clf),
        "quickstart": quickstart_cost(),
        "throughput": throughput(clf, splits, args.n_speed, args.rounds),
        "batch_dependence": batch_dependence(clf, splits),
    }
    result["load_average"] = [round(x, 1) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sanitize.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, RESULTS / "sanitize.md")
    print((RESULTS / "sanitize.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
