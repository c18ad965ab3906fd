"""Benchmark: ``acr-replicator copy`` against ``skopeo copy --all --preserve-digests``.

- Speed: an image of 2 platforms x 5 layers x 20 MiB, copied to a fresh target registry
  each run, ours and skopeo alternating (who goes first alternates too), at least 5 pairs;
  the median of the per-pair ratios ours/skopeo. Both run as a command in a child process
  (what a user runs), so ours pays Python's start-up as skopeo pays Go's.
- Memory: one 512 MiB layer; the peak RSS of the child process doing our copy.
- No-op: requests the target registry served (its access log) for a copy of an image it
  already holds, ours against skopeo.

Writes the ``## copy`` section of ``bench/RESULTS.md``.

    python -m bench copy [--pairs N] [--layer-mib N] [--big-mib N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bench import ROOT, write_section
from replicator.localstack import LocalStack, Registry
from replicator.oci.copy import ImageCopier
from replicator.oci.reference import ImageRef
from replicator.oci.registries import Registries
from replicator.oci.testimages import push_test_image

MIB = 1024 * 1024
PYTHON = sys.executable
_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/')


def requests_served(registry: Registry) -> int:
    with open(registry.access_log, errors="replace") as log:
        return sum(1 for line in log if _REQUEST.search(line))


def ours(src: str, dst: str) -> list[str]:
    return [PYTHON, "-m", "replicator", "copy", "--no-progress", src, dst]


def skopeo(src: str, dst: str) -> list[str]:
    return [
        "skopeo",
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--quiet",
        f"docker://{src}",
        f"docker://{dst}",
    ]


def run(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"bench copy: {argv[0]} failed ({child.returncode}): {err.strip()}")
    return seconds, int(usage.ru_maxrss)


def in_process(stack: LocalStack, src: str) -> float:
    """Our copy as the worker runs it: the library in this process, no start-up."""
    target = stack.start_registry()
    try:
        started = time.perf_counter()
        with Registries() as registries:
            ImageCopier(registries).copy_image(
                ImageRef.parse(src), ImageRef.parse(f"{target.host}/bench/app:v1")
            )
        return time.perf_counter() - started
    finally:
        target.stop()


def timed_pairs(
    stack: LocalStack, src: str, pairs: int, library: list[float]
) -> list[tuple[float, float]]:
    tools: dict[str, Callable[[str, str], list[str]]] = {"ours": ours, "skopeo": skopeo}
    results = []
    for pair in range(pairs):
        order = ["ours", "skopeo"] if pair % 2 == 0 else ["skopeo", "ours"]
        times: dict[str, float] = {}
        for name in order:
            target = stack.start_registry()  # a fresh, empty target each run
            try:
                times[name], _ = run(tools[name](src, f"{target.host}/bench/app:v1"))
            finally:
                target.stop()
        results.append((times["ours"], times["skopeo"]))
        library.append(in_process(stack, src))
        print(
            f"pair {pair + 1}: ours {times['ours']:.2f}s  skopeo {times['skopeo']:.2f}s  "
            f"ratio {times['ours'] / times['skopeo']:.2f}",
            flush=True,
        )
    return results


def noop_requests(stack: LocalStack, src: str) -> dict[str, int]:
    counts = {}
    for name, tool in (("ours", ours), ("skopeo", skopeo)):
        target = stack.start_registry()
        try:
            dst = f"{target.host}/bench/app:v1"
            run(tool(src, dst))
            time.sleep(0.2)  # let the access log flush
            before = requests_served(target)
            run(tool(src, dst))
            time.sleep(0.2)
            counts[name] = requests_served(target) - before
        finally:
            target.stop()
    return counts


def peak_memory(stack: LocalStack, source: Registry, big_mib: int) -> int:
    with Registries() as registries:
        ref = ImageRef(source.host, "bench/big", "v1")
        push_test_image(
            registries,
            ref,
            platforms=("linux/amd64",),
            layers=1,
            layer_size=big_mib * MIB,
            referrers=False,
        )
    target = stack.start_registry()
    try:
        _, rss = run(ours(f"{source.host}/bench/big:v1", f"{target.host}/bench/big:v1"))
    finally:
        target.stop()
    return rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench copy", description=__doc__)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--layer-mib", type=int, default=20)
    parser.add_argument("--big-mib", type=int, default=512)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with LocalStack() as stack:
        source = stack.start_registry()
        with Registries() as registries:
            push_test_image(
                registries,
                ImageRef(source.host, "bench/app", "v1"),
                layers=5,
                layer_size=args.layer_mib * MIB,
                referrers=False,
            )
        src = f"{source.host}/bench/app:v1"
        library: list[float] = []
        pairs = timed_pairs(stack, src, args.pairs, library)
        noop = noop_requests(stack, src)
        rss = peak_memory(stack, source, args.big_mib)
    ratios = [o / s for o, s in pairs]
    lines = [
        f"Command: `python -m bench copy --pairs {args.pairs} --layer-mib {args.layer_mib} "
        f"--big-mib {args.big_mib}` on {platform.machine()} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d')}, skopeo {_skopeo_version()}, distribution registries "
        "on loopback.",
        "",
        f"- Speed, 2 platforms x 5 layers x {args.layer_mib} MiB, fresh target each run, "
        f"{len(pairs)} alternating pairs: ours median "
        f"{statistics.median(o for o, _ in pairs):.2f}s, skopeo median "
        f"{statistics.median(s for _, s in pairs):.2f}s, **median ratio "
        f"ours/skopeo {statistics.median(ratios):.2f}** (goal <= 0.9; per pair: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + ").",
        f"- The same copy through the library in-process (how the worker runs it, no "
        f"interpreter start-up), after each pair: median {statistics.median(library):.2f}s, "
        f"{statistics.median(library) / statistics.median(s for _, s in pairs):.2f} of "
        "skopeo's median.",
        f"- Memory, one {args.big_mib} MiB layer: peak RSS of the copy process "
        f"**{rss / 1024:.0f} MiB** (goal <= 100 MiB).",
        f"- No-op (the target already holds the image): target registry requests "
        f"**ours {noop['ours']}**, skopeo {noop['skopeo']} (from the registry access log).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("copy", text + "\n\n" + NOTES)
    return 0


NOTES = """\
Both tools run as a command in a child process; ours is `python -m replicator copy`, so
its times include about 0.17 s of interpreter start-up and imports (`python -m replicator
--help` alone; httpx and the eager import of every sub-command in `replicator/cli`). The
in-process figure shows that start-up is not the whole gap: our data path (httpx/h11 in
Python threads, HTTP parsing in Python under the GIL, on 2 contended cores) is about as
fast as skopeo's, not faster. The 0.9 goal is not reached here. Layers are random bytes
(no compression work on either side); skopeo 1.9 with `--preserve-digests` streams blobs
without recompressing. Ours: 8 blobs at once, largest first, digest verified while
streaming, the last chunk held back until the digest matches. The machine is 2 shared
cores that other work kept busy (load average 5-9 during the run), so single pairs vary
a lot; the median ratio is what counts. The no-op count is for a source without
referrers; with referrers on the index and one child the test suite shows at most 3
(tag HEAD + one fallback-tag GET per subject with referrers,
`tests/integration/oci/test_oci_copy.py`).
"""


def _skopeo_version() -> str:
    try:
        out = subprocess.run(["skopeo", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return out.stdout.strip().rsplit(" ", 1)[-1]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
