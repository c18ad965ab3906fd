"""``acr-replicator diff``: drift between two registries, as missing / stale / extra.

Exit 0 in step, 1 drift found, 2 could not tell (a side or a repository was unreadable).
With ``--json`` stdout is CONTRACT.md's ``{"missing": [...], "stale": [...], "extra": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from replicator.adapters.oci.registries import Registries
from replicator.app.reconcile import ClientSource, ReconcileReport, compare
from replicator.cli.exits import EXIT_DRIFT, EXIT_OK, EXIT_UNKNOWN
from replicator.cli.workstation import workstation_credentials
from replicator.domain.config import Settings, _check_glob
from replicator.domain.errors import ConfigError
from replicator.domain.filters import Filters
from replicator.domain.model import Target
from replicator.domain.planning import Plan
from replicator.domain.reference import parse_registry


def add_common(parser: argparse.ArgumentParser) -> None:
    """The arguments ``diff`` and ``sync`` share."""
    parser.add_argument("--source", required=True, help="source login server (HOST[:PORT])")
    parser.add_argument("--target", required=True, help="target login server (HOST[:PORT])")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--concurrency", type=int, default=16, metavar="N")
    parser.add_argument(
        "--plain-http",
        action="append",
        default=[],
        metavar="HOST",
        help="speak plain HTTP to HOST (loopback hosts always are)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "diff", help="show drift between two registries", description=__doc__
    )
    add_common(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Settings:
    problems = [p for p in map(_check_glob, [*args.include, *args.exclude]) if p]
    if args.concurrency < 1:
        problems.append("--concurrency must be at least 1")
    if problems:
        raise ConfigError(problems)
    source, target = parse_registry(args.source), parse_registry(args.target)
    if source == target:
        raise ConfigError(["--source and --target are the same registry"])
    return Settings(
        source=source,
        targets=(Target(target),),
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        plain_http=frozenset(parse_registry(h) for h in args.plain_http),
    )


def registries_for(settings: Settings) -> Registries:
    """The OCI engine's client factory, with the workstation's credentials: the Docker
    config's entry for the host (``az acr login``, ``docker login``), else for an ACR the
    Azure CLI / environment identity exchanged for a registry token, else anonymous."""
    return Registries(plain_http=settings.uses_plain_http, credentials=workstation_credentials())


def measure(registries: ClientSource, settings: Settings, concurrency: int) -> ReconcileReport:
    return compare(
        registries,
        settings.source,
        [t.login_server for t in settings.targets],
        Filters(settings.include, settings.exclude),
        settings,
        concurrency=concurrency,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    registries = registries_for(settings)
    try:
        report = measure(registries, settings, args.concurrency)
    finally:
        registries.close()
    drift = report.targets[0].plan
    for line in report.errors[:20]:
        print(f"acr-replicator: could not list {line}", file=sys.stderr)
    if drift is None:
        print("acr-replicator: error: could not list a registry; drift unknown", file=sys.stderr)
        return EXIT_UNKNOWN
    if args.json:
        json.dump(drift.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_plan(drift, report.source_tags)
    if report.errors:
        return EXIT_UNKNOWN
    return EXIT_DRIFT if drift.drift else EXIT_OK


def print_plan(drift: Plan, source_tags: int) -> None:
    for kind in ("missing", "stale", "extra"):
        for entry in getattr(drift, kind):
            digests = f"{_short(entry.source_digest)} -> {_short(entry.target_digest)}"
            print(f"{kind:8} {entry.repository}:{entry.tag}  {digests}")
    counts = drift.counts()
    print(
        f"{source_tags} source tags: {drift.in_step} in step, {counts['missing']} missing, "
        f"{counts['stale']} stale, {counts['extra']} extra"
    )


def _short(digest: str | None) -> str:
    return digest[:19] if digest else "-"
