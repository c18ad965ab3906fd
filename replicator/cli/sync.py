"""``acr-replicator sync``: one-shot migration / catch-up of a whole registry.

Plans like ``diff``, then copies each missing or stale tag in this process with bounded
concurrency (progress bar on a terminal), or with ``--enqueue`` hands the jobs to the
deployed jobs queue so the Functions fleet does the copying. Interrupt it at any time:
an image's tag is written last, so a re-run finds and finishes exactly what is left.
Exit 0 done, 1 failures or (with ``--dry-run``) drift, 2 bad usage or nothing listable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx

from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.registries import Registries
from replicator.app.ports import Copier
from replicator.app.reconcile import Pacing, enqueue
from replicator.cli.common import add_pair_arguments, paced_registries, pair_settings
from replicator.cli.diff import measure, print_plan
from replicator.cli.exits import EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from replicator.cli.progress import Progress, progress, wanted
from replicator.domain.budgets import enqueue_per_minute
from replicator.domain.config import DEFAULT_QUEUE_CONNECTION, Settings, parse_storage
from replicator.domain.errors import ConfigError, ReplicatorError
from replicator.domain.model import CopyReport, Strategy
from replicator.domain.planning import DriftEntry, Plan, jobs_for
from replicator.domain.reference import ImageRef


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sync", help="copy what the target lacks (or enqueue it)", description=__doc__
    )
    add_pair_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="plan only; copy nothing")
    parser.add_argument(
        "--strategy",
        choices=[s.value for s in Strategy],
        default=Strategy.AUTO.value,
        help="copy (data plane, here) or auto (= copy in this process); import runs "
        "server-side in Azure, so only with --enqueue, where the deployed app's per-target "
        "strategy (REPLICATOR_TARGETS) decides",
    )
    parser.add_argument(
        "--enqueue",
        action="store_true",
        help="send the jobs to the deployed jobs queue instead of copying here",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.add_argument(
        "--queue-connection",
        default=os.environ.get("REPLICATOR_QUEUE_CONNECTION") or DEFAULT_QUEUE_CONNECTION,
        metavar="SETTING",
        help="environment variable holding the queue's connection (as the app settings do)",
    )
    parser.set_defaults(func=run)


@dataclass
class SyncReport:
    copied: list[dict[str, Any]] = field(default_factory=list)
    already_present: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    bytes_copied: int = 0
    interrupted: bool = False

    def to_dict(self, drift: Plan, seconds: float) -> dict[str, Any]:
        return {
            "copied": self.copied,
            "already_present": self.already_present,
            "failed": self.failed,
            "extra": [e.to_dict() for e in drift.extra],
            "in_step": drift.in_step,
            "bytes_copied": self.bytes_copied,
            "seconds": round(seconds, 3),
            "interrupted": self.interrupted,
        }


def run(args: argparse.Namespace) -> int:
    settings = pair_settings(args, os.environ)  # paced as the app is
    if args.strategy == Strategy.IMPORT.value and not args.enqueue:
        raise ConfigError(
            [
                "--strategy import runs server-side in Azure: use --enqueue with a deployed "
                "replicator whose target strategy is import, or --strategy copy"
            ]
        )
    started = time.monotonic()
    registries = paced_registries(settings)
    try:
        report = measure(registries, settings, args.concurrency)
        for line in report.errors[:20]:
            print(f"acr-replicator: could not list {line}", file=sys.stderr)
        drift = report.targets[0].plan
        if drift is None:
            print("acr-replicator: error: could not list a registry", file=sys.stderr)
            return EXIT_USAGE
        if args.dry_run:
            return _dry_run(args, drift)
        if args.enqueue:
            return _enqueue(args, settings, drift)
        copier = _copier(registries, args.concurrency)
        show = wanted(sys.stderr, json=args.json, no_progress=args.no_progress)
        outcome = copy_all(copier, settings, drift, args.concurrency, show_progress=show)
    finally:
        registries.close()
    _print_report(args, outcome, drift, time.monotonic() - started)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILURES if outcome.failed or report.errors else EXIT_OK


def _copier(registries: Registries, concurrency: int) -> Copier:
    return ImageCopier(registries, concurrency=max(2, concurrency // 4))


def _dry_run(args: argparse.Namespace, drift: Plan) -> int:
    if args.json:
        json.dump({**drift.to_dict(), "dry_run": True}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_plan(drift, drift.in_step + len(drift.to_copy))
    return EXIT_FAILURES if drift.drift else EXIT_OK


def _enqueue(args: argparse.Namespace, settings: Settings, drift: Plan) -> int:
    from replicator.adapters.azure.queue import StorageJobQueue

    storage = parse_storage(os.environ, args.queue_connection)
    if storage is None:
        raise ConfigError(
            [
                f"--enqueue needs the queue connection: set {args.queue_connection} to the "
                f"storage connection string, or {args.queue_connection}__queueServiceUri"
            ]
        )
    jobs = jobs_for(drift, settings, "cli")
    pacing = Pacing(jobs_per_minute=enqueue_per_minute(settings))  # the budgets' (issue 17)
    sent = enqueue(StorageJobQueue(storage), jobs, pacing)
    if args.json:
        json.dump(
            {"enqueued": sent, "queue_connection": args.queue_connection, **drift.counts()},
            sys.stdout,
        )
        sys.stdout.write("\n")
    else:
        print(f"enqueued {sent} jobs ({drift.counts()}); watch them with GET /api/status")
    return EXIT_OK


def copy_all(
    copier: Copier,
    settings: Settings,
    drift: Plan,
    concurrency: int,
    *,
    show_progress: bool = False,
) -> SyncReport:
    """Copy every missing or stale tag; Ctrl-C stops handing out new images."""
    entries = list(drift.to_copy)
    with progress(len(entries), "images", enabled=show_progress) as bar:
        return _copy_entries(copier, settings, entries, concurrency, bar)


def _copy_entries(
    copier: Copier,
    settings: Settings,
    entries: list[DriftEntry],
    concurrency: int,
    bar: Progress,
) -> SyncReport:
    report = SyncReport()
    lock = threading.Lock()
    target = settings.targets[0].login_server

    def one(entry: DriftEntry) -> CopyReport:
        src = ImageRef(settings.source, entry.repository, entry.tag, entry.source_digest)
        return copier.copy_image(src, src.with_registry(target))

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="sync")
    futures: dict[Future[CopyReport], DriftEntry] = {pool.submit(one, e): e for e in entries}
    pending = set(futures)
    try:
        while pending and not report.interrupted:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                with lock:
                    _record(report, futures[future], future, bar)
    except KeyboardInterrupt:  # Ctrl-C reaches the main thread, waiting here
        report.interrupted = True
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    return report


def _record(
    report: SyncReport, entry: DriftEntry, future: Future[CopyReport], bar: Progress
) -> None:
    item: dict[str, Any] = entry.to_dict()
    try:
        result = future.result()
    except KeyboardInterrupt:
        report.interrupted = True
        return
    except (ReplicatorError, httpx.HTTPError, OSError) as exc:
        report.failed.append({**item, "reason": f"{type(exc).__name__}: {exc}"[:500]})
        bar.advance()
        return
    item["digest"] = result.digest
    if result.already_present:
        report.already_present.append(item)
    else:
        report.copied.append({**item, "bytes": result.bytes_copied})
        report.bytes_copied += result.bytes_copied
    bar.advance(nbytes=result.bytes_copied)


def _print_report(
    args: argparse.Namespace, outcome: SyncReport, drift: Plan, seconds: float
) -> None:
    if args.json:
        json.dump(outcome.to_dict(drift, seconds), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for failure in outcome.failed:
        print(f"failed   {failure['repository']}:{failure['tag']}  {failure['reason']}")
    print(
        f"{len(outcome.copied)} copied ({outcome.bytes_copied / 2**20:.1f} MiB), "
        f"{len(outcome.already_present)} already present, {len(outcome.failed)} failed, "
        f"{len(drift.extra)} extra left in the target, {drift.in_step} in step "
        f"({seconds:.1f}s)" + ("; interrupted: re-run to finish" if outcome.interrupted else "")
    )
