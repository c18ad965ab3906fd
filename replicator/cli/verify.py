"""``acr-replicator verify``: an integrity audit of the DR copy.

Every in-scope tag's digest against the source; every child manifest, config and layer of
each image present in DR (HEAD, no blob bytes pulled); referrer parity (the source's
referrers of each manifest listed by DR). ``--deep`` also reads ``--sample`` blobs, chosen
at random (``--seed`` repeats a choice), end to end from DR and checks their digests.
``--resume FILE`` keeps a cursor there, so an interrupted audit goes on where it stopped
(the file is removed once the audit finishes). Paced by each registry's read and
referrers budgets (``REPLICATOR_RATE_LIMITS``, an ACR's SKU, the shares).

Exit 0 all proven, 1 something missing (or stale, or corrupt), 2 could not tell (a side
or a part of it unreadable, or bad usage). ``--json``: one object on stdout,
``{"missing": [...], "stale": [...], "unreadable": [...], "checked": {...}, "verdict"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from replicator.adapters.oci.registries import Registries
from replicator.app.verify import CursorMismatch, FileCursor, VerifyOptions, verify
from replicator.cli import common
from replicator.cli.common import add_pair_arguments, pair_settings
from replicator.cli.exits import (
    EXIT_DRIFT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    one_line,
)
from replicator.cli.progress import progress, wanted
from replicator.domain.config import Settings
from replicator.domain.errors import RegistryError
from replicator.domain.filters import Filters
from replicator.domain.integrity import Finding, Verdict, VerifyReport

EXITS = {Verdict.PROVEN: EXIT_OK, Verdict.MISSING: EXIT_DRIFT, Verdict.UNKNOWN: EXIT_UNKNOWN}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify", help="prove the DR copy complete (an integrity audit)", description=__doc__
    )
    add_pair_arguments(parser, target_help="DR login server (HOST[:PORT])", concurrency=8)
    parser.add_argument("--deep", action="store_true", help="also read sampled blobs whole")
    parser.add_argument("--sample", type=int, default=None, metavar="N", help="default 10")
    parser.add_argument("--seed", type=int, default=None, metavar="N", help="of the sample")
    parser.add_argument("--resume", metavar="FILE", help="keep (and go on from) a cursor")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """The audit's settings, every problem at once; budgets from the app settings."""
    problems: list[str] = []
    if args.sample is not None and not args.deep:
        problems.append("--sample needs --deep")
    if args.sample is not None and args.sample < 1:
        problems.append("--sample must be at least 1")
    if args.seed is not None and not args.deep:
        problems.append("--seed needs --deep")
    if args.resume is not None and os.path.isdir(args.resume):
        problems.append(f"--resume {args.resume} is a directory, not a file")
    return pair_settings(args, dict(os.environ) if env is None else env, problems)


def paced_registries(settings: Settings) -> Registries:
    """The audit's registries, sleeping out any wait (a command has no queue to defer to)."""
    return common.paced_registries(settings, defer_after=None)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    options = VerifyOptions(
        deep=args.deep,
        sample=args.sample or 10,
        seed=args.seed,
        concurrency=args.concurrency,
    )
    filters = Filters(settings.include, settings.exclude)
    store = FileCursor(args.resume) if args.resume else None
    show = wanted(sys.stderr, json=args.json, no_progress=args.no_progress)
    registries = paced_registries(settings)
    try:
        with progress(0, "images", enabled=show) as bar:
            report = verify(
                registries,
                settings.source,
                settings.targets[0].login_server,
                filters,
                options,
                store=store,
                tally=bar,
            )
    except CursorMismatch as exc:
        print(f"acr-replicator: error: --resume: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        again = f"; run it again with --resume {args.resume} to go on" if args.resume else ""
        print(f"acr-replicator: interrupted{again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RegistryError as exc:
        return one_line(args, exc, EXIT_UNKNOWN, "; the copy could not be verified")
    finally:
        registries.close()
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report)
    return EXITS[report.verdict]


def print_report(report: VerifyReport) -> None:
    for kind in ("missing", "stale", "unreadable"):
        for finding in sorted(getattr(report.findings, kind)):
            print(f"{kind:10} {describe(finding)}")
    c = report.checked
    deep = f"; {c.deep_blobs} blobs ({c.deep_bytes} bytes) read whole" if c.deep_blobs else ""
    counts = {k: len(getattr(report.findings, k)) for k in ("missing", "stale", "unreadable")}
    print(
        f"{c.tags} tags, {c.images} images, {c.manifests} manifests, {c.blobs} blobs, "
        f"{c.referrers} referrers checked{deep}: {counts['missing']} missing, "
        f"{counts['stale']} stale, {counts['unreadable']} unreadable ({report.verdict.value})"
    )


def describe(finding: Finding) -> str:
    """``blob team/app@sha256:... (of sha256:...)``, one line."""
    where = finding.repository or "-"
    if finding.tag:
        where += f":{finding.tag}"
    if finding.digest:
        where += f"@{finding.digest}"
    notes = []
    if finding.target_digest:
        notes.append(f"DR has {finding.target_digest}")
    if finding.parent:
        notes.append(f"of {finding.parent}")
    if finding.artifact_type:
        notes.append(finding.artifact_type)
    if finding.reason:
        notes.append(finding.reason)
    return f"{finding.kind:9} {where}" + (f"  ({'; '.join(notes)})" if notes else "")
