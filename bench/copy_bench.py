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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench import ROOT, publish, registry_cpu
from devstack.localstack import LocalStack, Registry
from devstack.testimages import push_test_image
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.registries import Registries
from replicator.domain.reference import ImageRef

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


@dataclass(frozen=True)
class Run:
    """One copy: wall seconds, the copying process's CPU seconds and peak RSS (KiB)."""

    seconds: float
    cpu: float
    rss: int


def run(argv: list[str]) -> Run:
    """Run one child process to the end."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"bench copy: {argv[0]} failed ({child.returncode}): {err.strip()}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, int(usage.ru_maxrss))


@dataclass
class Pair:
    """One run of each tool on the same image: their runs, the CPU seconds the source and
    target registries spent serving each (ours, skopeo), and one in-process copy."""

    ours: Run
    skopeo: Run
    registries_cpu: tuple[float, float]
    library: float  # our copy in-process, right after the pair

    @property
    def ratio(self) -> float:
        return self.ours.seconds / self.skopeo.seconds


def timed_pairs(stack: LocalStack, source: Registry, src: str, pairs: int) -> list[Pair]:
    tools: dict[str, Callable[[str, str], list[str]]] = {"ours": ours, "skopeo": skopeo}
    results = []
    for pair in range(pairs):
        order = ["ours", "skopeo"] if pair % 2 == 0 else ["skopeo", "ours"]
        runs: dict[str, Run] = {}
        served: dict[str, float] = {}
        for name in order:
            target = stack.start_registry()  # a fresh, empty target each run
            try:
                before = registry_cpu(source) + registry_cpu(target)
                runs[name] = run(tools[name](src, f"{target.host}/bench/app:v1"))
                served[name] = registry_cpu(source) + registry_cpu(target) - before
            finally:
                target.stop()
        served_cpu = (served["ours"], served["skopeo"])
        results.append(Pair(runs["ours"], runs["skopeo"], served_cpu, in_process(stack, src)))
        print(
            f"pair {pair + 1}: ours {runs['ours'].seconds:.2f}s  skopeo "
            f"{runs['skopeo'].seconds:.2f}s  ratio {results[-1].ratio:.2f}  CPU ours "
            f"{runs['ours'].cpu:.2f}s skopeo {runs['skopeo'].cpu:.2f}s registries "
            f"{served['ours']:.2f}s / {served['skopeo']:.2f}s",
            flush=True,
        )
    return results


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
        big = run(ours(f"{source.host}/bench/big:v1", f"{target.host}/bench/big:v1"))
    finally:
        target.stop()
    return big.rss


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
        pairs = timed_pairs(stack, source, src, args.pairs)
        noop = noop_requests(stack, src)
        rss = peak_memory(stack, source, args.big_mib)
    ratios = [p.ratio for p in pairs]

    def median(values: Iterable[float]) -> float:
        return statistics.median(list(values))

    ours_s, skopeo_s = (
        median(p.ours.seconds for p in pairs),
        median(p.skopeo.seconds for p in pairs),
    )
    ours_cpu, skopeo_cpu = median(p.ours.cpu for p in pairs), median(p.skopeo.cpu for p in pairs)
    served = median(p.registries_cpu[0] for p in pairs), median(p.registries_cpu[1] for p in pairs)
    library = median(p.library for p in pairs)
    lines = [
        f"Command: `python -m bench copy --pairs {args.pairs} --layer-mib {args.layer_mib} "
        f"--big-mib {args.big_mib}` on {platform.machine()} ({os.cpu_count()} cores, load "
        f"average {os.getloadavg()[0]:.1f} at the end), {time.strftime('%Y-%m-%d %H:%M')} "
        f"UTC, skopeo {_skopeo_version()}, distribution registries on loopback.",
        "",
        f"- Speed, 2 platforms x 5 layers x {args.layer_mib} MiB, fresh target each run, "
        f"{len(pairs)} alternating pairs: ours median {ours_s:.2f}s, skopeo median "
        f"{skopeo_s:.2f}s, **median ratio ours/skopeo {median(ratios):.2f}** (goal <= 0.9; "
        "per pair: " + ", ".join(f"{r:.2f}" for r in ratios) + ").",
        f"- The same copy through the library in-process (how the worker runs it, no "
        f"interpreter start-up), after each pair: median {library:.2f}s, "
        f"{library / skopeo_s:.2f} of skopeo's median.",
        f"- CPU of the copying process, median: **ours {ours_cpu:.2f}s, skopeo "
        f"{skopeo_cpu:.2f}s ({ours_cpu / skopeo_cpu:.2f})**; CPU of the two registries "
        f"serving the copy: {served[0]:.2f}s for ours, {served[1]:.2f}s for skopeo.",
        f"- Memory, one {args.big_mib} MiB layer: peak RSS of the copy process "
        f"**{rss / 1024:.0f} MiB** (goal <= 100 MiB).",
        f"- No-op (the target already holds the image): target registry requests "
        f"**ours {noop['ours']}**, skopeo {noop['skopeo']} (from the registry access log).",
    ]
    publish("copy", lines, NOTES, write=not args.no_write)
    return 0


NOTES = """\
Where the time goes. The copy moves 200 MiB; both registries together spend about 1.4 s of
CPU serving it (the target hashes every byte as it writes it, distribution's own digest
check), the same for either tool and two thirds or more of all the CPU in a run. On two
cores the wall time is bounded below by half the sum of the registries' and the copier's
CPU, so a copier wins only by using less CPU itself and by starting sooner. Ours now uses
about a third less CPU than skopeo's (the CPU line above; SHA-256 of the 200 MiB, digest
verified while streaming, is 0.13 s of it), and a start-up of about 0.1 s (Python, the
imports of httpx and the replicator) against skopeo's 0.04 s keeps the command's ratio above
the in-process one (how the worker copies, and `sync` for every image after the first).
Single pairs vary a lot on this machine (disk write-back of the previous run's 200 MiB);
the median of alternating pairs is what counts.

History (same command, same machine): 1.00-1.06 with httpx's own transport in one shared
client (httpcore and h11 reading 64 KiB at a time: 0.64 s of CPU per copy against skopeo's
0.75); 0.90-0.93 with a hand-written transport on `http.client` (`replicator/oci/pool.py`,
256 KiB reads), removed on 2026-12-01 (issue 14: no hand-written HTTP stack) for one small
httpx client per registry with httpx's own transport. Tried and left: more or fewer blobs
at once (2, 4, 6, 8 or 12 give the same time within the noise: the registries are the
bottleneck).

Layers are random bytes (no compression work on either side); skopeo 1.9 with
`--preserve-digests` streams blobs without recompressing. Ours: 8 blobs at once, largest
first, the last chunk held back until the digest matches, one monolithic PUT per blob
(skopeo: POST, PATCH, PUT). The no-op count is for a source without referrers; with
referrers on the index and one child the test suite shows at most 3 (tag HEAD + one
fallback-tag GET per subject with referrers, `tests/integration/oci/test_oci_copy.py`).
"""


def _skopeo_version() -> str:
    try:
        out = subprocess.run(["skopeo", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return out.stdout.strip().rsplit(" ", 1)[-1]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
