"""The README stays true: its configuration table lists every key with its default."""

from pathlib import Path

from fedsafe_plugin.config import describe_keys

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_config_table_matches_schema():
    for key, default, help_text in describe_keys():
        assert f"| `{key}` | `{default}` | {help_text} |" in README, key


def test_quick_start_test_command_is_what_ci_runs():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    command = 'bash scripts/setup.sh && .venv/bin/python -m pytest -m ""'
    assert command in README and command in ci
