"""Benchmark: 1,000 pushes across 100 repositories through the local queue runner.

The images (one platform, one small layer each) are pushed to the source first; then the
runner starts (host.json's batch size, on a real Azurite queue) and the 1,000 Event Grid
events are delivered to ``on_registry_event`` as fast as they come: a burst, so the lag
includes the time a job waits behind the backlog. Checks that every tag is in the DR
registry at its digest and that no image was copied twice; measures throughput (jobs per
second, first event to empty queue) and lag p50/p95 (push to replicated, from the status
table's ``lagSeconds``). Writes the ``## load`` section of ``bench/RESULTS.md``.

    python -m bench load            # or: python -m bench load --pushes 200 --repos 20
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime

from bench import publish
from devstack.localrun import QueueOptions, QueueRunner
from devstack.localruntime import LocalRuntime
from devstack.localstack import LocalStack
from devstack.localworker import Counting, deliver_push, worker_runtime
from devstack.testimages import push_images
from replicator.adapters.azure.queue import queue_client
from replicator.app.api import percentile
from replicator.domain.config import StorageConnection
from replicator.domain.model import utcnow
from replicator.domain.reference import ImageRef
from replicator.functions import triggers


def _runner(runtime: LocalRuntime) -> QueueRunner:
    storage = runtime.settings.storage
    assert isinstance(storage, StorageConnection)
    options = QueueOptions.from_host_json()
    options = QueueOptions(
        batch_size=options.batch_size,
        visibility_timeout=options.visibility_timeout,
        max_dequeue_count=options.max_dequeue_count,
        max_polling_interval=0.1,  # the host polls at once while messages keep coming
        message_encoding=options.message_encoding,
    )
    return QueueRunner(
        queue_client(storage, runtime.queue.name),
        queue_client(storage, runtime.queue.poison_name),
        triggers.replicate,
        options,
    )


def run(pushes: int, repos: int) -> dict[str, float]:
    with LocalStack() as stack:
        source, target, azurite = (
            stack.start_registry(),
            stack.start_registry(),
            stack.start_azurite(),
        )
        with worker_runtime(source, target, azurite) as (runtime, counting):
            pushed = push_images(
                runtime.registries,
                source.host,
                pushes,
                repos=repos,
                prefix="load",
                platforms=("linux/amd64",),
                layer_size=256,
                referrers=False,
            )
            images = {ref: image.digest for ref, image in pushed.items()}
            since = utcnow()
            runner = _runner(runtime)
            done = threading.Event()
            errors: list[BaseException] = []

            def drive() -> None:
                try:
                    while not done.is_set():
                        if not runner.run_once():
                            time.sleep(0.05)
                except BaseException as exc:  # reported below, never swallowed
                    errors.append(exc)

            started = time.perf_counter()
            thread = threading.Thread(target=drive, daemon=True)
            thread.start()
            for ref, digest in images.items():
                deliver_push(ref, digest)
            events_s = time.perf_counter() - started
            done.set()  # all events are in: drain what is left, then stop the clock
            thread.join()
            stats = runner.run_until_idle(timeout=1800) if not errors else None
            seconds = time.perf_counter() - started
            if errors or stats is None:
                raise SystemExit(f"bench load: runner failed: {errors[:1]}")
            return _check(runtime, target.host, images, counting, since) | {
                "seconds": seconds,
                "events_s": events_s,
                "jobs_per_s": pushes / seconds,
                "poisoned": float(runner.stats.poisoned),
                "failed_attempts": float(runner.stats.failed_attempts),
            }


def _check(
    runtime: LocalRuntime,
    target_host: str,
    images: dict[ImageRef, str],
    counting: Counting,
    since: datetime,
) -> dict[str, float]:
    client = runtime.registries.client(target_host)
    missing = [
        ref
        for ref, digest in images.items()
        if (found := client.head_manifest(ref.with_registry(target_host))) is None
        or found.digest != digest
    ]
    completed = Counter(counting.done)
    rows = [r for r in runtime.status.since(since) if r.get("outcome") == "copied"]
    lags = sorted(float(lag) for r in rows if isinstance(lag := r.get("lagSeconds"), int | float))
    return {
        "missing": float(len(missing)),
        "copied": float(len(completed)),
        "twice": float(sum(1 for n in completed.values() if n > 1)),
        "attempted": float(len(counting.copies)),
        "lag_p50": percentile(lags, 50) or 0.0,
        "lag_p95": percentile(lags, 95) or 0.0,
        "lag_max": lags[-1] if lags else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench load", description=__doc__)
    parser.add_argument("--pushes", type=int, default=1000)
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    result = run(args.pushes, args.repos)
    ok = result["missing"] == 0 and result["twice"] == 0 and result["poisoned"] == 0
    lines = [
        f"{args.pushes} pushes across {args.repos} repositories (one platform, one 256-byte "
        "layer each), delivered as a burst of Event Grid events to `on_registry_event`, "
        "drained by the local queue runner with host.json's settings, on Azurite and two "
        f"CNCF distribution registries on loopback. {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} (shared machine). Command: "
        f"`.venv/bin/python -m bench load{' ' + ' '.join(argv or []) if argv else ''}`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| replicated at the right digest | {args.pushes - int(result['missing'])} / "
        f"{args.pushes} |",
        f"| copied to completion more than once | {int(result['twice'])} |",
        f"| copies attempted / completed | {int(result['attempted'])} / {int(result['copied'])} |",
        f"| poisoned / failed attempts | {int(result['poisoned'])} / "
        f"{int(result['failed_attempts'])} |",
        f"| throughput, first event to empty queue | {result['jobs_per_s']:.1f} jobs/s "
        f"({result['seconds']:.1f} s) |",
        f"| events delivered (all {args.pushes}) | {result['events_s']:.1f} s |",
        f"| lag p50 / p95 / max (push to replicated) | {result['lag_p50']:.1f} / "
        f"{result['lag_p95']:.1f} / {result['lag_max']:.1f} s |",
    ]
    publish("load", lines, NOTES, write=not args.no_write)
    return 0 if ok else 1


NOTES = """\
A burst: all events arrive within the "events delivered" time while the runner works, so
a job's lag is mostly time spent waiting in the queue behind the others (the p95 is close
to the whole run), not its own copy time; the lag of a steady stream slower than the
throughput is not measured here. Registries, Azurite and the worker share the same two
cores with other users of the machine (see the load average), so the throughput is a
floor for this method, not a ceiling.
"""


if __name__ == "__main__":
    sys.exit(main())
