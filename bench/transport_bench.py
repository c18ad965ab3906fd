"""Benchmark: CPU per manifest HEAD on a kept-alive loopback connection, by HTTP library.

Against a real CNCF distribution registry on loopback: ``urllib3.PoolManager`` and
``httpx.Client`` with its default transport (one small client for the registry, as
``replicator.adapters.oci.registries`` keeps one per registry host), each from 1, 4 and 16 threads
sharing one pool. ``http.client`` bare (one connection, one thread) is the floor. Each
figure is the median over ``--runs`` runs of ``--requests`` HEADs; CPU is this process's
(``time.process_time``), so the registry's own work is left out. Writes the
``## transport`` section of ``bench/RESULTS.md``.

    python -m bench transport [--runs 5 --requests 2000]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import version

import httpx
import urllib3

from bench import publish
from devstack.localstack import LocalStack
from devstack.testimages import push_test_image
from replicator.adapters.oci.registries import Registries
from replicator.domain.manifests import ACCEPT
from replicator.domain.reference import ImageRef

Head = Callable[[], int]


def _http_client(host: str, path: str) -> tuple[Head, Callable[[], None]]:
    name, port = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(name, int(port))

    def head() -> int:
        conn.request("HEAD", path, headers={"Accept": ACCEPT})
        response = conn.getresponse()
        response.read()
        return response.status

    return head, conn.close


def _urllib3(host: str, path: str, size: int) -> tuple[Head, Callable[[], None]]:
    pool = urllib3.PoolManager(maxsize=size, block=True, retries=False)
    url = f"http://{host}{path}"

    def head() -> int:
        response = pool.request("HEAD", url, headers={"Accept": ACCEPT}, preload_content=True)
        return response.status

    return head, pool.clear


def _httpx(host: str, path: str, size: int) -> tuple[Head, Callable[[], None]]:
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    client = httpx.Client(limits=limits, headers={"Accept-Encoding": "identity"})
    url = f"http://{host}{path}"

    def head() -> int:
        return client.head(url, headers={"Accept": ACCEPT}).status_code

    return head, client.close


def cpu_per_request(head: Head, requests: int, threads: int) -> float:
    """Microseconds of this process's CPU per request."""
    for _ in range(50):  # open the connections, warm the caches
        assert head() == 200
    started = time.process_time()
    if threads == 1:
        for _ in range(requests):
            head()
    else:
        with ThreadPoolExecutor(threads) as pool:
            statuses = list(pool.map(lambda _: head(), range(requests)))
        assert set(statuses) == {200}
    return 1e6 * (time.process_time() - started) / requests


def measure(host: str, path: str, runs: int, requests: int) -> dict[str, float]:
    makers: dict[str, Callable[[int], tuple[Head, Callable[[], None]]]] = {
        "http.client (floor)": lambda _: _http_client(host, path),
        "urllib3.PoolManager": lambda size: _urllib3(host, path, size),
        "httpx.Client, default transport": lambda size: _httpx(host, path, size),
    }
    results: dict[str, float] = {}
    for name, make in makers.items():
        for threads in (1,) if name.startswith("http.client") else (1, 4, 16):
            samples = []
            for _ in range(runs):
                head, close = make(max(threads, 4))
                try:
                    samples.append(cpu_per_request(head, requests, threads))
                finally:
                    close()
            results[f"{name} | {threads}"] = statistics.median(samples)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench transport")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with LocalStack() as stack:
        registry = stack.start_registry()
        ref = ImageRef(registry.host, "bench/head", "v1")
        with Registries() as registries:
            push_test_image(registries, ref, layers=1, referrers=False)
        path = f"/v2/{ref.repository}/manifests/{ref.tag}"
        results = measure(registry.host, path, args.runs, args.requests)
    floor = results["http.client (floor) | 1"]
    lines = [
        f"Command: `python -m bench transport --runs {args.runs} --requests {args.requests}` "
        f"on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"httpx {httpx.__version__}, urllib3 {version('urllib3')}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}.",
        "",
        "| library | threads | CPU us per HEAD (median) | x http.client |",
        "|---|---|---|---|",
    ]
    for key, value in results.items():
        name, threads = key.split(" | ")
        lines.append(f"| {name} | {threads} | {value:.0f} | {value / floor:.2f} |")
    publish("transport", lines, NOTES, write=not args.no_write)
    return 0


NOTES = """\
Chosen: httpx, one small `httpx.Client` per registry host with its default transport
(`replicator/adapters/oci/registries.py`). urllib3 costs less CPU per request, but the whole
client (requests, streamed responses, timeouts, errors, the tests' `MockTransport`) is
written against httpx, whose default transport Azure Monitor's distro instruments for
dependency spans, reads `*_PROXY`/`NO_PROXY` and keeps the same `Limits` on its proxy
transports. One client per registry keeps its pool small (httpcore's pool bookkeeping
grows with the number of connections it holds, encode/httpcore#1035) and gives the
per-registry connection limit that a blob copy needs (it holds its source connection while
it uploads to the target). The CPU difference per request is what the `diff` section
pays for it."""


if __name__ == "__main__":
    raise SystemExit(main())
