"""Locate the public safety data folder (`../shared/data`) for benchmarks and tests.

The package never needs it at run time: it is only read where a user or a test points at it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "FEDSAFE_SHARED_DATA"


def find_shared_data(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the data folder: `explicit`, $FEDSAFE_SHARED_DATA, or ../shared/data beside the repo."""
    candidates = [explicit, os.environ.get(ENV_VAR)]
    repo = Path(__file__).resolve().parent.parent
    candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "normalized").is_dir():
            return Path(c)
    return None


def iter_jsonl(path: str | os.PathLike[str], strict: bool = True) -> Iterator[tuple[int, dict | str]]:
    """(line number, object) per non-empty line; a bad line raises ValueError naming the line number,
    or with `strict=False` is yielded as (line number, "what is wrong") so the rest is not lost."""
    with open(path, "rb") as fh:  # bytes, so one line that is not UTF-8 costs only that line
        for lineno, raw in enumerate(fh, 1):
            row: dict | None = None
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")  # a BOM may open the file
            except UnicodeDecodeError as exc:
                problem: str | None = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            else:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    problem = None if isinstance(row, dict) else "expected a JSON object"
                except json.JSONDecodeError as exc:
                    where = "at the end of the line" if exc.pos >= len(line) else f"at column {exc.colno}"
                    problem = f"not valid JSON ({exc.msg} {where})"
            if problem is not None and strict:
                raise ValueError(f"{path}:{lineno}: {problem}")
            yield lineno, row if problem is None else problem


def load_normalized(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[dict]:
    """Rows of `normalized/<name>.jsonl` from the shared data folder (FileNotFoundError if absent)."""
    root = find_shared_data(data_dir)
    if root is None:
        raise FileNotFoundError(
            f"shared safety data not found; pass a folder or set ${ENV_VAR} to one holding normalized/"
        )
    return [row for _, row in iter_jsonl(root / "normalized" / f"{name}.jsonl")]
