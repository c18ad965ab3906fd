"""Benchmark: what referrer drift costs, per image and per pass, and how long a full sweep
takes at ACR's ListReferrers limits.

Measured on this machine: a full referrer check (``ReferrerChecker``, what reconcile's
sweep and ``diff --referrers`` run) of images in step between two local registries with
the OCI 1.1 referrers API (``devstack.referrers_api`` in front of CNCF distribution: the
ACR-to-ACR shape), in two shapes: ``--images`` tiny single-platform images, every second
one signed, and ``--indexes`` two-platform indexes with an SBOM on the index and a
signature on a platform (``devstack.testimages``). Counted: referrers calls per image on
each side (the pacer's count) and every request each registry answered (the API layer's
log: manifest GETs included), and the passes a sweep of the tiny images needs at a
scaled-down budget (``--budget-rate`` calls a minute), run through the real pass logic
(``plan_sweep``, ``advance``, the budget check), so the pass arithmetic below is tested.

Computed from the measured per-image cost: the requests per pass and the time a full sweep
takes for 1,000, 10,000 and 100,000 images at the Standard and Premium limits
(``limits_for``: ListReferrers 500 / 2,000 a minute per registry, 250 / 1,000 per identity,
the source at its default 0.5 share), a pass spending ``PASS_MINUTES`` of the budget and
reconcile running every 30 minutes (the default schedule). Writes ``## referrers``.

    python -m bench referrers [--images 1000 --indexes 100 --budget-rate 60]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench import publish
from devstack.localstack import LocalStack
from devstack.referrers_api import ReferrersRegistry, start_referrers_registry
from devstack.testimages import (
    SIGNATURE_TYPE,
    push_referrer,
    push_test_image,
    seed,
    seed_manifest,
)
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.listing import RegistryLister
from replicator.adapters.oci.referrer_lister import RegistryReferrers
from replicator.adapters.oci.registries import Registries
from replicator.app.referrer_checks import Pace, ReferrerChecker
from replicator.app.referrer_drift import PASS_MINUTES, Image, advance, in_step_images, plan_sweep
from replicator.domain.budgets import Limits, limits_for
from replicator.domain.config import Settings
from replicator.domain.model import Target
from replicator.domain.reference import ImageRef

SCHEDULE_MINUTES = 30  # REPLICATOR_RECONCILE_SCHEDULE's default, 0 */30 * * * *
SIZES = (1_000, 10_000, 100_000)


@dataclass(frozen=True)
class Cost:
    """One measured full check of ``images`` images."""

    shape: str
    images: int
    source_calls: int  # referrers calls (the ListReferrers bucket)
    target_calls: int
    source_requests: int  # every request the registry answered (manifest GETs too)
    target_requests: int
    seconds: float
    missing: int

    def per_image(self, calls: int) -> float:
        return calls / self.images


def _in_step(registries: Registries, source: str, target: str) -> list[Image]:
    listings = [RegistryLister(registries.client(h), h).listing() for h in (source, target)]
    return list(in_step_images(listings[0].entries, listings[1].entries))


def measure(
    shape: str, source: ReferrersRegistry, target: ReferrersRegistry, registries: Registries
) -> Cost:
    settings = Settings(source=source.host, targets=(Target(target.host),))
    images = _in_step(registries, source.host, target.host)
    pace = Pace(settings, minutes=None)
    checker = ReferrerChecker(
        RegistryReferrers(registries), source.host, target.host, pace, concurrency=8
    )
    before = len(source.api.requests), len(target.api.requests)
    started = time.perf_counter()
    done = checker.check_all(images)
    seconds = time.perf_counter() - started
    errors = [c.error for c in done.checks if c.error is not None]
    if done.stopped is not None:
        errors.append(done.stopped)
    if errors:
        raise SystemExit(f"bench referrers: the check failed: {errors[:3]}")
    return Cost(
        shape,
        len(images),
        pace.spent.get(source.host, 0),
        pace.spent.get(target.host, 0),
        len(source.api.requests) - before[0],
        len(target.api.requests) - before[1],
        seconds,
        sum(len(c.missing) for c in done.checks),
    )


def passes_at(
    source: ReferrersRegistry, target: ReferrersRegistry, registries: Registries, rate: float
) -> list[int]:
    """Source referrers calls of each pass of a sweep at ``rate`` calls a minute (share 1),
    through the pass logic, until the sweep completes its first lap."""
    limits = {source.host: Limits(referrers=rate)}
    settings = Settings(
        source=source.host, targets=(Target(target.host),), rate_limits=limits, source_share=1.0
    )
    images = _in_step(registries, source.host, target.host)
    cursor, calls = "", []
    for _ in range(1_000):
        pace = Pace(settings)  # one pass: its own bound
        sweep = plan_sweep(images, cursor, changed=())
        lister = RegistryReferrers(registries)
        checker = ReferrerChecker(lister, source.host, target.host, pace, concurrency=8)
        done = checker.check_all(sweep.rolling)
        cursor, lap = advance(sweep, len(done.checks), cursor)
        calls.append(pace.spent.get(source.host, 0))
        if lap:
            return calls
    raise SystemExit("bench referrers: the sweep never completed a lap")


def _each(work: Callable[[int], object], count: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(count)))


def plant_tiny(registries: Registries, hosts: tuple[str, str], count: int) -> None:
    """``count`` tiny images over 50 repositories on both sides, every second one signed
    (the same signature bytes on both: in step)."""
    images = [(f"tiny/app{i % 50:02d}", f"v{i // 50}", i) for i in range(count)]
    for host in hosts:
        seed(registries, host, images)

    def sign(i: int) -> None:
        repo, tag, variant = images[i * 2]
        for host in hosts:
            ref = ImageRef(host, repo, tag)
            push_referrer(
                registries, ref, seed_manifest(variant), SIGNATURE_TYPE, f"sig {i}".encode()
            )

    _each(sign, count // 2)


def plant_indexes(registries: Registries, hosts: tuple[str, str], count: int) -> None:
    """``count`` two-platform indexes with an SBOM and a signature, copied to DR."""
    copier = ImageCopier(registries)

    def one(i: int) -> None:
        ref = ImageRef(hosts[0], f"multi/app{i % 10}", f"v{i // 10}")
        push_test_image(registries, ref, layers=1, layer_size=128)
        copier.copy_image(ref, ref.with_registry(hosts[1]))

    _each(one, count)


def acr_rates(sku: str) -> tuple[float, float]:
    """The referrers rate of a source and of a DR target of ``sku`` (limits_for)."""
    source, target = f"src{sku.lower()}.azurecr.io", f"dr{sku.lower()}.azurecr.io"
    settings = Settings(source=source, targets=(Target(target),), skus={source: sku, target: sku})
    rates = [limits_for(settings, h).rate("referrers") for h in (source, target)]
    assert rates[0] is not None and rates[1] is not None
    return rates[0], rates[1]


def table(cost: Cost) -> list[str]:
    src, dst = cost.per_image(cost.source_calls), cost.per_image(cost.target_calls)
    lines = [
        f"Per image ({cost.shape}, measured): {src:.2f} referrers calls on the source, "
        f"{dst:.2f} on DR, plus 1 manifest GET on the source (the read bucket).",
        "",
        "| images | SKU | referrers calls a minute, source / DR | images per pass | "
        "referrers calls per pass, source / DR | full sweep: checking time | full sweep: "
        "passes (wall time, a pass every 30 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for sku in ("Standard", "Premium"):
        rate_src, rate_dst = acr_rates(sku)
        for n in SIZES:
            # a pass checks images until the first side's PASS_MINUTES of budget is spent
            fits = [rate_src * PASS_MINUTES / src] + (
                [rate_dst * PASS_MINUTES / dst] if dst else []
            )
            per_pass = min([float(n), *fits])
            passes = math.ceil(n / per_pass - 1e-9)
            checking = max(n * src / rate_src, n * dst / rate_dst)
            wall = (passes - 1) * (SCHEDULE_MINUTES - PASS_MINUTES) + checking
            lines.append(
                f"| {n:,} | {sku} | {rate_src:g} / {rate_dst:g} | {per_pass:,.0f} | "
                f"{per_pass * src:,.0f} / {per_pass * dst:,.0f} | {_duration(checking)} | "
                f"{passes} ({_duration(wall)}) |"
            )
    return lines


def every_pass(cost: Cost, images: int = SIZES[-1]) -> str:
    """What checking every image in every 30-minute pass would need."""
    need = images * cost.per_image(cost.source_calls) / SCHEDULE_MINUTES
    standard, premium = acr_rates("Standard")[0], acr_rates("Premium")[0]
    return (
        f"Checking all {images:,} images ({cost.shape}) in every 30-minute pass would take "
        f"{need:,.0f} referrers calls a minute on the source: {need / standard:.0f} times "
        f"Standard's {standard:g}, {need / premium:.0f} times Premium's {premium:g}."
    )


def _duration(minutes: float) -> str:
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench referrers", description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--indexes", type=int, default=100)
    parser.add_argument("--budget-rate", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    with LocalStack() as stack, Registries() as registries:
        pairs = [(start_referrers_registry(stack), start_referrers_registry(stack)) for _ in "ab"]
        try:
            tiny_hosts = (pairs[0][0].host, pairs[0][1].host)
            started = time.perf_counter()
            plant_tiny(registries, tiny_hosts, args.images)
            plant_indexes(registries, (pairs[1][0].host, pairs[1][1].host), args.indexes)
            planting = time.perf_counter() - started
            tiny = measure("tiny, half signed", *pairs[0], registries)
            multi = measure("2-platform index, SBOM + signature", *pairs[1], registries)
            passes = passes_at(*pairs[0], registries, args.budget_rate)
        finally:
            for pair in pairs:
                for running in pair:
                    running.stop()
    lines = _report(args, tiny, multi, passes, planting)
    publish("referrers", lines, NOTES, write=not args.no_write)
    return 0


def _report(
    args: argparse.Namespace, tiny: Cost, multi: Cost, passes: list[int], planting: float
) -> list[str]:
    budget = args.budget_rate * PASS_MINUTES
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} UTC on {platform.machine()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores (shared, load average "
        f"{os.getloadavg()[0]:.1f}); two CNCF distribution registries each behind the "
        "referrers API layer (devstack/referrers_api.py), loopback. Command: "
        f"`python -m bench referrers --images {args.images} --indexes {args.indexes} "
        f"--budget-rate {args.budget_rate:g}` (planting took {planting:.0f} s).",
        "",
        "| measured | images | referrers calls, source / DR | requests answered, "
        "source / DR | local check, unpaced | referrers missing |",
        "|---|---|---|---|---|---|",
    ]
    for cost in (tiny, multi):
        lines.append(
            f"| {cost.shape} | {cost.images:,} | {cost.source_calls:,} / {cost.target_calls:,} "
            f"| {cost.source_requests:,} / {cost.target_requests:,} | {cost.seconds:.1f} s | "
            f"{cost.missing} |"
        )
    lines += [
        "",
        f"A sweep of the {tiny.images:,} tiny images at a budget of {args.budget_rate:g} "
        f"referrers calls a minute ({budget:,.0f} a pass): {len(passes)} passes, source "
        f"referrers calls per pass {', '.join(f'{c:,}' for c in passes)} (measured; a pass "
        "stops at the first batch that reaches the budget, so it may pass it by up to one "
        "batch of 8 images).",
        "",
        "### Computed for the Standard and Premium limits (from the measured per-image cost)",
        "",
        *table(tiny),
        "",
        *table(multi),
        "",
        every_pass(tiny),
        every_pass(multi),
    ]
    return lines


NOTES = """\
Which is which: the two "measured" rows and the pass count are measured here; every row of
the two computed tables is the measured per-image cost times the image count, divided by
the rate `limits_for` gives (Standard: 500 ListReferrers a minute per registry, 250 per
identity; Premium: 2,000 and 1,000; the source at REPLICATOR_SOURCE_SHARE 0.5, capped at
the per-identity figure since the fleet is one identity; reference section 3). "Checking
time" is the pure paced time; a reconcile pass spends at most PASS_MINUTES (10) of it, one
pass per 30-minute schedule, so the wall time of a full sweep is the passes times 30
minutes (the last one partial). The local unpaced time says what this machine does when no
budget holds it back; ACR's budget, not the replicator, is what bounds a sweep.

Where the calls go: one referrers call per manifest on the source (the index and each
platform, and each referrer the two sides share, for its own referrers), and on DR only
for the manifests whose source list is not empty (under `keep`, DR's extras change
nothing, so DR is not listed where the source has none); plus one manifest GET per image
on the source, in the read bucket (10,000 a minute on Standard). Changed images (a job
finished on them, or a fallback tag moved) come first in each pass, so a lost signature on
a recently pushed image is found within one pass; one on an old image, within one sweep.

One budget paces: every referrers call goes through the registry client's budget pacer
(`replicator.adapters.budget_pacer`, fleet-wide in the app, in process for `diff`), which
also paces the worker's own referrer listings during a copy; a pass only counts its calls
(`replicator.app.referrer_checks.Pace`) and stops at 10 minutes' worth of the rate the
pacer spends them at, so a pass in every 30 leaves two thirds of the budget to the worker.
"""


if __name__ == "__main__":
    raise SystemExit(main())
