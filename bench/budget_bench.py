"""Benchmark: how much of a request budget the fleet uses, and that it never goes over.

Three instances (``--instances``, each its own interpreter) of ``--threads`` senders each
pace ``GET /v2/`` by the fleet pacer (``replicator.adapters.azure.budget_store``: slices
leased from one Azurite table row under ETag concurrency) and send it through the
throttling double (``devstack/throttling.py``: ACR's token buckets, 10 s deep) in
front of a real registry whose read limit is ``--limit`` a minute. The budget is 25 %,
50 % and 100 % of that limit (the share). Counted at the double: the requests a minute
in the steady state (after the first 10 s) as a fraction of the budget (goal >= 0.9),
the most in any 60 s window over the budget plus the stated overshoot (burst 2 s +
grace 1 s), and the 429s. Request level, not image jobs. Writes ``## budget``.

    python -m bench budget [--limit 3000 --seconds 70 --instances 3 --threads 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import threading
import time
import uuid

import httpx

from bench import publish
from devstack.hostile import running
from devstack.localstack import LocalStack
from devstack.throttling import Throttle, ThrottlingRegistry, most_in_window
from replicator.adapters.azure.budget_store import TableLeases
from replicator.adapters.budget_pacer import DEFAULT_GRACE_SECONDS, BudgetPacer
from replicator.domain.budgets import DEFAULT_BURST_SECONDS, Limits
from replicator.domain.config import StorageConnection

SHARES = (0.25, 0.5, 1.0)
WARMUP = 10.0
AGENT = "acr-replicator"


def _instance(
    connection: str, key: str, url: str, budget: float, start: float, seconds: float, threads: int
) -> int:
    pacer = BudgetPacer(lambda _r: Limits(read=budget), TableLeases(StorageConnection(connection)))
    sent = [0]
    lock = threading.Lock()

    def sender() -> None:
        with httpx.Client(headers={"User-Agent": AGENT}) as http:
            while True:
                time.sleep(pacer.before(key, "read"))
                if time.time() >= start + seconds:
                    return
                http.get(url)
                with lock:
                    sent[0] += 1

    time.sleep(max(0.0, start - time.time()))
    workers = [threading.Thread(target=sender) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sent[0]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench budget")
    parser.add_argument("--limit", type=float, default=3000.0, help="the read limit a minute")
    parser.add_argument("--seconds", type=float, default=70.0)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    lines = [
        f"{args.instances} instances x {args.threads} senders, read limit {args.limit:g}/min, "
        f"{args.seconds:g} s a run, buckets 10 s deep; {platform.python_version()}, "
        f"{os.cpu_count()} cores",
        "",
        "| share | budget /min | steady /min | used | most in 60 s | cap (budget + 3 s) | 429s |",
        "|---|---|---|---|---|---|---|",
    ]
    spawn = multiprocessing.get_context("spawn")
    with LocalStack() as stack:
        registry, azurite = stack.start_registry(), stack.start_azurite()
        for share in SHARES:
            budget = args.limit * share
            limits = {"read": args.limit}
            throttle = Throttle(limits, depth_seconds=10.0, identity_limits=limits)
            proxy = ThrottlingRegistry(registry.host, throttle)
            with running(proxy):
                key = f"b{uuid.uuid4().hex[:8]}.example"
                start = time.time() + 5.0
                with spawn.Pool(args.instances) as pool:
                    pool.starmap(
                        _instance,
                        [
                            (
                                azurite.connection_string,
                                key,
                                f"http://{proxy.host}/v2/",
                                budget,
                                start,
                                args.seconds,
                                args.threads,
                            )
                        ]
                        * args.instances,
                    )
            times = sorted(c.at for c in throttle.accepted)
            steady = [t for t in times if start + WARMUP <= t < start + args.seconds]
            rate = len(steady) / (args.seconds - WARMUP) * 60.0
            cap = budget * (60 + DEFAULT_BURST_SECONDS + DEFAULT_GRACE_SECONDS) / 60 + 1
            lines.append(
                f"| {share:.0%} | {budget:g} | {rate:.0f} | {rate / budget:.2f} | "
                f"{most_in_window(times, 60.0)} | {cap:.0f} | {len(throttle.refused)} |"
            )
    notes = (
        "Counted at the double. `steady` excludes the first 10 s (the initial burst an idle "
        "budget allows); `most in 60 s` includes it and must stay under the cap, the budget "
        "plus the overshoot `replicator/adapters/azure/budget_store.py` states."
    )
    publish("budget", lines, notes, write=not args.no_write)
    return 0
