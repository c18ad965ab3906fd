"""``acr-replicator``: the one-shot command line (copy, sync, diff, doctor, demo).

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func`` to a ``run(args) -> int``. Exit codes: 0 done, 1 done with
failures or drift, 2 bad usage or set-up. Errors are one line on stderr unless ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from replicator.cli.exits import EXIT_FAILURES, EXIT_USAGE, one_line
from replicator.domain.errors import ConfigError, InvalidReferenceError, ReplicatorError, StackError

COMMANDS = ("copy", "sync", "diff", "verify", "doctor", "demo")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def format_help(self) -> str:
        """The help, from the modules' docstrings without their reST quoting."""
        return super().format_help().replace("``", "")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that sub-command (each start imports one module)."""
    parser = _Parser(prog="acr-replicator", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in (only,) if only else COMMANDS:
        try:
            module = importlib.import_module(f"replicator.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"replicator.cli.{name}":
                raise
            continue  # a command not built yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    named = [a for a in argv if not a.startswith("-")][:1]
    parser = build_parser(named[0] if named and named[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("acr-replicator: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, InvalidReferenceError, StackError) as exc:
        return one_line(args, exc, EXIT_USAGE)
    except ReplicatorError as exc:
        return one_line(args, exc, EXIT_FAILURES)
