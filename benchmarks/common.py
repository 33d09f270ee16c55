"""Shared benchmark plumbing: machine info, timing, and results as JSON plus a Markdown table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """Where and with what a measurement was taken."""
    import torch

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def median_seconds(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as a GitHub Markdown table (columns default to the first row's keys)."""
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(
    name: str, rows: Sequence[dict[str, Any]], *, title: str, notes: str = "",
    columns: Sequence[str] | None = None, extra: dict[str, Any] | None = None, out_dir: Path = RESULTS,
) -> tuple[Path, Path]:
    """Write `<name>.json` (rows + machine info) and `<name>.md` (title, table, notes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = machine_info()
    payload = {"name": name, "machine": meta, "rows": list(rows), **(extra or {})}
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    header = f"# {title}\n\nMeasured {meta['date']} on {meta['cpu_count']} CPU cores, torch {meta['torch']}.\n\n"
    md_path.write_text(header + markdown_table(rows, columns) + "\n" + (f"\n{notes}\n" if notes else ""))
    return json_path, md_path
