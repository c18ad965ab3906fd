"""``acr-replicator diff``: drift between two registries, as missing / stale / extra.

Exit 0 in step, 1 drift found, 2 could not tell (a side or a repository was unreadable).
With ``--json`` stdout is CONTRACT.md's ``{"missing": [...], "stale": [...], "extra": [...]}``.
``--referrers`` also compares the referrers (signatures, SBOMs, attestations) of every
image in step by tags, its index and platforms, and adds ``"referrers_missing"``: one
referrers call per manifest on the source (and on the target where the source has some),
paced by each registry's referrers budget (REPLICATOR_RATE_LIMITS, else an ACR's SKU,
REPLICATOR_REGISTRY_SKUS, as the app paces it). Without it, one line on stderr says what
the check would cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from replicator.adapters.oci.referrer_lister import RegistryReferrers
from replicator.app.reconcile import ClientSource, ReconcileReport, compare
from replicator.app.referrer_drift import in_step_images, sweep_minutes
from replicator.app.referrer_sweep import TargetReferrers, sweep_all
from replicator.cli.common import add_pair_arguments, paced_registries, pair_settings
from replicator.cli.exits import EXIT_DRIFT, EXIT_OK, EXIT_UNKNOWN
from replicator.domain.budgets import limits_for
from replicator.domain.config import Settings
from replicator.domain.filters import Filters
from replicator.domain.planning import Plan


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "diff", help="show drift between two registries", description=__doc__
    )
    add_pair_arguments(parser)
    parser.add_argument(
        "--referrers",
        action="store_true",
        help="also compare the referrers of every image in step (one referrers call per "
        "manifest, paced by the registries' referrers budgets)",
    )
    parser.set_defaults(func=run)


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
    settings = pair_settings(args, os.environ)
    registries = paced_registries(settings)
    referrers: TargetReferrers | None = None
    try:
        report = measure(registries, settings, args.concurrency)
        side = report.targets[0]
        if args.referrers and side.plan is not None:
            referrers = sweep_all(
                RegistryReferrers(registries),
                settings,
                report.source_entries,
                side.target,
                side.entries,
                concurrency=min(args.concurrency, 8),
            )
    finally:
        registries.close()
    drift = report.targets[0].plan
    for line in report.errors[:20]:
        print(f"acr-replicator: could not list {line}", file=sys.stderr)
    if drift is None:
        print("acr-replicator: error: could not list a registry; drift unknown", file=sys.stderr)
        return EXIT_UNKNOWN
    if referrers is None:
        print(unchecked_line(settings, report), file=sys.stderr)
    else:
        for line in [*referrers.errors[:20], *([referrers.stopped] if referrers.stopped else [])]:
            print(f"acr-replicator: could not check {line}", file=sys.stderr)
    if args.json:
        body: dict[str, Any] = dict(drift.to_dict())
        if referrers is not None:
            body["referrers_missing"] = [r.to_dict() for r in referrers.missing]
        json.dump(body, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_plan(drift, report.source_tags)
        if referrers is not None:
            print_referrers(referrers)
    unread = referrers is not None and bool(referrers.errors or referrers.stopped)
    if report.errors or unread:
        return EXIT_UNKNOWN
    missing = referrers is not None and bool(referrers.missing)
    return EXIT_DRIFT if drift.drift or missing else EXIT_OK


def unchecked_line(settings: Settings, report: ReconcileReport) -> str:
    """What ``--referrers`` would cost here: one referrers call per manifest, at least one
    per image in step (more with their platforms), at the source's referrers budget."""
    side = report.targets[0]
    images = len(in_step_images(report.source_entries, side.entries))
    rate = limits_for(settings, settings.source).rate("referrers")
    minutes = sweep_minutes(images, rate)
    if minutes is None:
        pace = f"unpaced ({settings.source} has no referrers budget: REPLICATOR_RATE_LIMITS)"
    else:
        took = "under a minute" if minutes < 1 else f"about {minutes:.0f} min"
        pace = f"{took} at {settings.source}'s {rate:g} referrers calls a minute"
    return (
        "acr-replicator: referrers not checked (--referrers: one referrers call per manifest, "
        f"{images} images in step and their platforms; {pace})"
    )


def print_referrers(found: TargetReferrers) -> None:
    for r in found.missing:
        kind = r.artifact_type or "-"
        print(f"referrer {r.repository}@{_short(r.subject)}  {_short(r.digest)}  {kind}")
    print(f"{found.checked} images in step checked: {len(found.missing)} referrers missing")


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
