"""`fedsafe` command line: each capability registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules exposing `register(subparsers)`; heavy imports stay inside their handlers so
# `fedsafe --help` is instant.
_COMMAND_MODULES = [
    "fedsafe_plugin.privacy.cli",
    "fedsafe_plugin.privacy.secagg.cli",
    "fedsafe_plugin.eval.cli",
    "fedsafe_plugin.demo.cli",
    "fedsafe_plugin.sanitize.cli",
]


class CLIError(Exception):
    """A bad argument or input the user can fix: printed as one line, exit status 2."""


# What a user fixes by pointing at another path; anything else keeps its traceback.
_USER_ERRORS = (CLIError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    """The full `fedsafe` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fedsafe",
        description="FedDetox for Flower: sanitization, DP LoRA training, secure aggregation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fedsafe` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except _USER_ERRORS as exc:
        print(f"fedsafe {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
