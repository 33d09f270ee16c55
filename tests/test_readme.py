"""The README stays true: its configuration table lists every key with its default."""

import difflib
import re
from pathlib import Path

import pytest

from fedsafe_plugin.config import describe_keys

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_config_table_matches_schema():
    for key, default, help_text in describe_keys():
        assert f"| `{key}` | `{default}` | {help_text} |" in README, key


def test_quick_start_test_command_is_what_ci_runs():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    command = 'bash scripts/setup.sh && .venv/bin/python -m pytest -m ""'
    assert command in README and command in ci


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIFFS = {"Message API": "migrate-message-api", "NumPyClient": "migrate-numpyclient"}


def _readme_diff(title: str) -> tuple[int, dict[str, list[str]]]:
    """The changed-line count and the per-file diff lines the README shows under `**title**`."""
    section = README.split(f"**{title}**", 1)[1]
    count = int(re.search(r"(\d+) changed lines:", section).group(1))
    block = section.split("```diff\n", 1)[1].split("```", 1)[0]
    files: dict[str, list[str]] = {}
    for line in block.splitlines():
        if line.startswith("+++ after/"):
            files[line.removeprefix("+++ after/")] = []
        elif not line.startswith("--- before/"):
            files[list(files)[-1]].append(line)
    return count, files


def _changed(before: list[str], after: list[str]) -> tuple[int, list[str]]:
    """Changed lines (a replaced line counts once) and the -/+ lines of a diff, in order."""
    count, lines = 0, []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if tag != "equal":
            count += max(i2 - i1, j2 - j1)
            lines += [f"-{x}" for x in before[i1:i2]] + [f"+{x}" for x in after[j1:j2]]
    return count, lines


@pytest.mark.parametrize("title", sorted(DIFFS))
def test_adoption_diffs_are_the_examples(title):
    root = EXAMPLES / DIFFS[title]
    count, shown = _readme_diff(title)
    total = 0
    for path in sorted(p.relative_to(root / "after") for p in (root / "after").rglob("*") if p.is_file()):
        before = (root / "before" / path).read_text().splitlines()
        after = (root / "after" / path).read_text().splitlines()
        n, lines = _changed(before, after)
        total += n
        if n:
            assert str(path) in shown, f"{path} changes but the README does not show it"
            assert [x for x in shown[str(path)] if x[:1] in "+-"] == lines, path
            assert all(x[1:] in after for x in shown[str(path)] if x.startswith(" ")), path
    assert total == count
