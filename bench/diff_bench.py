"""Benchmark: ``diff`` of 200 repositories x 10 tags between two local registries.

Measures tags per second (source tags listed and compared, per wall-clock second) and
requests per tag on each side, counted by the registries themselves (their access logs,
so retries and pagination are included). Goal: >= 500 tags/s, <= 1.05 requests per tag
per side on plain registries. Writes the ``## diff`` section of ``bench/RESULTS.md``.

    python -m bench diff            # or: python bench/diff_bench.py [--repos N --tags N]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time

from bench import publish, registry_cpu
from devstack.localstack import LocalStack, Registry
from devstack.testimages import seed
from replicator.adapters.oci.registries import Registries
from replicator.app.reconcile import compare
from replicator.cli.common import paced_registries
from replicator.domain.config import Settings
from replicator.domain.filters import Filters
from replicator.domain.model import Target

_REQUEST = re.compile(r'^\S+ - \S+ \[[^\]]+\] "[A-Z]+ ')


def requests_served(registry: Registry) -> int:
    with open(registry.access_log, errors="replace") as log:
        return sum(1 for line in log if _REQUEST.match(line))


def run_once(source: Registry, target: Registry, concurrency: int) -> dict[str, float]:
    settings = Settings(source=source.host, targets=(Target(target.host),))
    before = requests_served(source), requests_served(target)
    servers_cpu = registry_cpu(source) + registry_cpu(target)
    own_cpu = time.process_time()
    registries = paced_registries(settings)
    started = time.perf_counter()
    try:
        report = compare(
            registries, source.host, [target.host], Filters(), settings, concurrency=concurrency
        )
    finally:
        registries.close()
    seconds = time.perf_counter() - started
    own_cpu = time.process_time() - own_cpu
    servers_cpu = registry_cpu(source) + registry_cpu(target) - servers_cpu
    plan = report.targets[0].plan
    if plan is None or report.errors:
        raise SystemExit(f"bench diff: listing failed: {report.errors[:3]}")
    tags = report.source_tags
    return {
        "tags": tags,
        "seconds": seconds,
        "tags_per_s": tags / seconds,
        "src_req_per_tag": (requests_served(source) - before[0]) / tags,
        "dst_req_per_tag": (requests_served(target) - before[1]) / tags,
        "drift": len(plan.missing) + len(plan.stale) + len(plan.extra),
        "own_cpu": own_cpu,
        "servers_cpu": servers_cpu,
        # what the same work needs on idle cores: the replicator is one GIL-bound process
        "idle_tags_per_s": tags / max((own_cpu + servers_cpu) / (os.cpu_count() or 1), own_cpu),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench diff", description=__doc__)
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    images = [
        (f"bench/app{r:04d}", f"v{t}", t) for r in range(args.repos) for t in range(args.tags)
    ]
    with LocalStack() as stack:
        source, target = stack.start_registry(), stack.start_registry()
        with Registries() as seeding:
            seed(seeding, source.host, images)
            seed(seeding, target.host, images)
        runs = [run_once(source, target, args.concurrency) for _ in range(args.runs)]
    best = max(runs, key=lambda r: r["tags_per_s"])
    median = statistics.median(r["tags_per_s"] for r in runs)
    idle = statistics.median(r["idle_tags_per_s"] for r in runs)
    lines = [
        f"{args.repos} repositories x {args.tags} tags, in step, {args.runs} runs, "
        f"concurrency {args.concurrency}; {platform.machine()}, Python "
        f"{platform.python_version()}, CNCF distribution on loopback; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end (the benchmark's own processes "
        f"included), {time.strftime('%Y-%m-%d %H:%M')} UTC. Command: "
        f"`python -m bench diff --runs {args.runs} --concurrency {args.concurrency}`.",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| tags/s (median of {args.runs}) | {median:.0f} | >= 500 |",
        f"| tags/s (best) | {best['tags_per_s']:.0f} | |",
        f"| CPU s per 1,000 tags: replicator / both registries | "
        f"{1000 * best['own_cpu'] / best['tags']:.2f} / "
        f"{1000 * best['servers_cpu'] / best['tags']:.2f} | |",
        f"| tags/s projected on idle cores, from CPU time (median) | {idle:.0f} | >= 500 |",
        f"| requests per tag, source | {best['src_req_per_tag']:.3f} | <= 1.05 |",
        f"| requests per tag, target | {best['dst_req_per_tag']:.3f} | <= 1.05 |",
        f"| drift found | {int(best['drift'])} | 0 |",
    ]
    publish("diff", lines, NOTES, write=not args.no_write)
    return 0


NOTES = """\
The wall-clock rate depends on what else the machine runs (the load average is above).
The projection divides the CPU time the replicator and both registries used by the cores,
bounded below by the replicator's own CPU time (one GIL-bound process). The registries'
own work (a manifest HEAD by tag reads the tag link, the revision link and the manifest
from their filesystem storage, then writes an access-log line) is about two thirds of the
total, so on two cores the registries alone cap the rate near 850 tags/s.

History. On 2026-11-29 the replicator's share was halved (1.85 -> about 0.95 CPU ms per
tag): httpcore's connection pool counts its connections again for every idle one, twice
per request, quadratic in the pool's size (encode/httpcore#1035), and a hand-written
transport on `http.client` (`replicator/oci/pool.py`) replaced httpcore and h11. That
transport is gone since 2026-12-01 (issue 14: no hand-written HTTP stack; Application
Insights never saw its requests, proxies switched it off): each registry now has its own
small `httpx.Client` with httpx's own transport, which keeps httpcore's pool small, and
the CPU per HEAD of each library is in the `## transport` section. The difference per
request is the price of the kept library.

Requests are counted by the registries (access logs). On a plain OCI registry a tag's
digest costs one manifest HEAD, and each repository costs one `tags/list` (plus the
catalog pages), so 10 tags per repository is 1 + 1/10 = 1.1 requests per tag at the
least: the 1.05 goal is reachable only with 20 or more tags per repository (with 20,
the same command measures it: `--tags 20`). ACR's `/acr/v1/<repo>/_manifests` lists
digests with tags, so on ACR it is one request per repository page (about 0.01 per tag
here; see `tests/integration/test_listing.py`).
"""


if __name__ == "__main__":
    sys.exit(main())
