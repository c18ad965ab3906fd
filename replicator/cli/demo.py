"""``acr-replicator demo``: the end-to-end flow on a local stack (what ``make demo`` runs).

The local stack (registries, Azurite, the queue runner) is the checkout's ``devstack/``,
not part of the deployed package: it is loaded only when the demo runs, and an installed
package without it says so in one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from replicator.cli.exits import EXIT_USAGE

DEV_STACK = "devstack.demo"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole replication flow on a local stack (registries, Azurite)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module(DEV_STACK)
    except ModuleNotFoundError as exc:
        if exc.name not in ("devstack", DEV_STACK):
            raise
        print(
            "acr-replicator: the demo needs the dev stack of a checkout: run `make demo` there",
            file=sys.stderr,
        )
        return EXIT_USAGE
    result: int = demo.run_demo()
    return result
