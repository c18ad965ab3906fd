"""``acr-replicator demo``: the end-to-end flow on a local stack (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole replication flow on a local stack (registries, Azurite)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from replicator.demo import run_demo

    return run_demo()
