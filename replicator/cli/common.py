"""What the commands between two registries (``diff``, ``sync``, ``verify``) share: their
arguments, their settings (every problem at once, the budgets read as the app reads them),
their paced registries (their one-line errors: ``exits.one_line``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from replicator.adapters.budget_pacer import BudgetPacer
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import MAX_RETRY_AFTER, RetryPolicy
from replicator.cli.workstation import workstation_credentials
from replicator.domain.budgets import limits_for
from replicator.domain.config import Settings, _check_glob, parse_budget_settings
from replicator.domain.errors import ConfigError, InvalidReferenceError
from replicator.domain.model import Target
from replicator.domain.reference import parse_registry


def add_pair_arguments(
    parser: argparse.ArgumentParser,
    *,
    target_help: str = "target login server (HOST[:PORT])",
    concurrency: int = 16,
) -> None:
    """--source, --target, --include, --exclude, --json, --concurrency, --plain-http."""
    parser.add_argument("--source", required=True, help="source login server (HOST[:PORT])")
    parser.add_argument("--target", required=True, help=target_help)
    parser.add_argument("--include", action="append", default=[], metavar="GLOB")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--concurrency", type=int, default=concurrency, metavar="N")
    parser.add_argument(
        "--plain-http",
        action="append",
        default=[],
        metavar="HOST",
        help="speak plain HTTP to HOST (loopback hosts always are)",
    )


def pair_settings(
    args: argparse.Namespace, env: Mapping[str, str], extra: Sequence[str] = ()
) -> Settings:
    """The settings of a command between ``--source`` and ``--target``, the budgets from
    the app settings in ``env``; one ``ConfigError`` with every problem (``extra``: the
    command's own)."""
    problems = [p for p in map(_check_glob, [*args.include, *args.exclude]) if p]
    if args.concurrency < 1:
        problems.append("--concurrency must be at least 1")
    problems.extend(extra)
    hosts: list[str] = []
    for flag, value in (("--source", args.source), ("--target", args.target)):
        try:
            hosts.append(parse_registry(value))
        except InvalidReferenceError as exc:
            problems.append(f"{flag}: {exc}")
    if len(hosts) == 2 and hosts[0] == hosts[1]:
        problems.append("--source and --target are the same registry")
    budgets = parse_budget_settings(env, problems)
    plain: list[str] = []
    for host in args.plain_http:
        try:
            plain.append(parse_registry(host))
        except InvalidReferenceError as exc:
            problems.append(f"--plain-http: {exc}")
    if problems:
        raise ConfigError(problems)
    return Settings(
        source=hosts[0],
        targets=(Target(hosts[1]),),
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        plain_http=frozenset(plain),
        rate_limits=budgets.rate_limits,
        source_share=budgets.source_share,
        target_share=budgets.target_share,
        skus=budgets.skus,
    )


def paced_registries(
    settings: Settings, *, defer_after: float | None = MAX_RETRY_AFTER
) -> Registries:
    """The OCI engine's client factory, with the workstation's credentials (the Docker
    config's entry for the host: ``az acr login``, ``docker login``; else for an ACR the
    Azure CLI / environment identity exchanged for a registry token; else anonymous),
    plain HTTP where asked, paced in this process by the budgets (``defer_after=None``:
    sleep out any wait)."""
    pacer = BudgetPacer(lambda registry: limits_for(settings, registry))
    return Registries(
        plain_http=settings.uses_plain_http,
        credentials=workstation_credentials(),
        retry=RetryPolicy(pacer=pacer, defer_after=defer_after),
    )
