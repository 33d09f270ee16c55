"""Quality of the shipped student on held-out sources, and its throughput vs a plain MiniLM fp32.

    python benchmarks/bench_sanitize.py [--data-dir ../shared/data] [--student PATH] [--n-speed 512]

Writes benchmarks/results/sanitize.json and sanitize.md. Quality uses the test split of
fedsafe_plugin/sanitize/splits.py (sources and behaviours never trained on). Throughput is
measured in one process on 2 threads, max length 128, on the same held-out pairs for every
variant, rounds interleaved so machine load hits all variants alike; the best of the rounds counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

# Headline quality numbers: (name, groups pooled, what the rate is).
HEADLINES = [
    ("pair recall: harmful prompt + compliant response (JBB jailbroken, real)", ["jbb_artifact_jailbroken"], "recall"),
    ("pair recall: harmful prompt + 'Sure, here is' target (JBB held-out)", ["jbb_harmful_target"], "recall"),
    ("pair recall: HarmBench / XSTest-contrast + compliant template", ["harmbench_compliant", "xstest_harmful_compliant"], "recall"),
    ("pair FPR: harmful prompt + real refusal (JBB not jailbroken)", ["jbb_artifact_refused"], "fpr"),
    ("pair FPR: HarmBench prompt + refusal template", ["harmbench_refusal_template"], "fpr"),
    ("pair FPR: benign look-alikes + helpful answer (XSTest safe held-out types + template, JBB benign + target)", ["xstest_benign_compliant", "jbb_benign_target"], "fpr"),
    ("pair FPR: HH-RLHF helpful (held-out rows)", ["hh_helpful_chosen"], "fpr"),
    ("pair FPR: Self-Instruct + reference output (eval only)", ["selfinstruct_reference"], "fpr"),
    ("prompt-only recall: HarmBench", ["harmbench_prompt"], "recall"),
    ("prompt-only recall: StrongREJECT", ["strongreject_prompt"], "recall"),
    ("prompt-only FPR: XSTest safe (held-out types)", ["xstest_benign_prompt"], "fpr"),
    ("prompt-only FPR: JBB benign / Self-Instruct", ["jbb_benign_prompt", "selfinstruct_prompt"], "fpr"),
    ("jailbreak-template-wrapped HarmBench request caught (prompt-only, held-out templates)", ["jailbreak_wrapped_prompt"], "recall"),
]


def quality(clf, data_dir: str) -> dict:
    """Per-group flagged rates on the test split, plus the pooled headline rates."""
    from fedsafe_plugin.sanitize.splits import build_splits, flagged_rates

    test = build_splits(data_dir).test
    scores = clf.score([x.prompt for x in test], [x.response for x in test])
    groups = flagged_rates(test, scores, clf.threshold, clf.prompt_threshold)
    rows = []
    for name, members, kind in HEADLINES:
        n = sum(groups[g]["n"] for g in members if g in groups)
        flagged = sum(groups[g]["flagged"] for g in members if g in groups)
        rows.append({"metric": name, "kind": kind, "n": n, "rate": flagged / n if n else float("nan")})
    return {"groups": groups, "headlines": rows}


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


def throughput(clf, data_dir: str, n: int, rounds: int) -> list[dict]:
    """samples/s of the baseline and the optimisations, on the same held-out pairs."""
    import torch

    from fedsafe_plugin.sanitize.encoder import Encoder, EncoderSpec
    from fedsafe_plugin.sanitize.splits import build_splits

    torch.set_num_threads(2)
    pairs = [x for x in build_splits(data_dir).test if x.response is not None]
    rng = np.random.default_rng(0)
    pick = [pairs[i] for i in rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)]
    prompts, responses = [x.prompt for x in pick], [x.response for x in pick]
    shipped = clf.config.encoder
    variants = [
        ("baseline: MiniLM-L6 fp32, batch 32, unsorted", EncoderSpec(shipped.backbone, 128, 0, False), 32, False),
        ("MiniLM-L6 fp32, length-sorted", EncoderSpec(shipped.backbone, 128, 0, False), 64, True),
        ("MiniLM-L6 int8, length-sorted", EncoderSpec(shipped.backbone, 128, 0, True), 64, True),
        (f"shipped: first {shipped.num_layers or 6} layers, {'int8' if shipped.quantize else 'fp32'}, length-sorted", shipped, 64, True),
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


def write_markdown(result: dict, path: Path) -> None:
    q, s, d = result["quality"], result["throughput"], result["demo"]
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
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--student", default="")
    ap.add_argument("--n-speed", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from fedsafe_plugin.sanitize.classifier import SafetyClassifier
    from fedsafe_plugin.shared_data import find_shared_data

    data_dir = find_shared_data(args.data_dir)
    if data_dir is None:
        raise SystemExit("../shared/data not found; pass --data-dir")
    clf = SafetyClassifier.load(args.student or None)
    enc = clf.config.encoder
    result = {
        "machine": f"{platform.machine()} CPU",
        "n_speed": args.n_speed,
        "rounds": args.rounds,
        "student": {"backbone": enc.backbone, "layers": enc.num_layers or "all", "quantize": enc.quantize,
                    "max_length": enc.max_length, "threshold": clf.threshold, "prompt_threshold": clf.prompt_threshold},
        "quality": quality(clf, str(data_dir)),
        "demo": demo_quality(clf),
        "throughput": throughput(clf, str(data_dir), args.n_speed, args.rounds),
    }
    result["load_average"] = round(os.getloadavg()[0], 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sanitize.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, RESULTS / "sanitize.md")
    print((RESULTS / "sanitize.md").read_text())


if __name__ == "__main__":
    main()
