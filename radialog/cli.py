"""The `radialog` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from radialog import __version__
from radialog.commands import COMMAND_MODULES
from radialog.errors import RaDialogError


def command_name(module: str) -> str:
    return module.rsplit(".", 1)[1].replace("_", "-")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; when `argv` names a command, only that command's module is imported.

    Commands pull in heavy libraries (torch, transformers, gradio); `radialog label` should not pay for them.
    """
    parser = argparse.ArgumentParser(prog="radialog", description=__doc__)
    parser.add_argument("--version", action="version", version=f"radialog {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True)
    # The global options take no values, so the first bare word is the command.
    first = next((word for word in argv or () if not word.startswith("-")), None)
    chosen = [name for name in COMMAND_MODULES if command_name(name) == first]
    for name in chosen or COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except RaDialogError as err:
        # Input problems are the user's to fix: one line, no traceback.
        print(f"radialog {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
