"""Referrer checks against the registries, paced by each registry's ``referrers`` budget.

``ReferrerChecker.check(image)`` reads the image's manifest in the source (its children),
lists the referrers of each manifest on both sides (``list_referrers``: the API, else the
fallback tag; DR only where ``needs_target`` says so) and compares them
(``replicator.app.referrer_drift.compare_subject``), level by level to ``MAX_DEPTH``.
Every referrers call waits for its registry's ``TokenBucket`` first (``Pace``: the rate is
``limits_for(settings, host).rate("referrers")``, REPLICATOR_RATE_LIMITS else the SKU's,
times the share; in this process, until the fleet-wide budget exists) and counts against
the pass's budget (``PASS_MINUTES`` of it). A check that cannot finish is reported with
its error and its findings dropped, so a half-read listing never becomes a job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from replicator.adapters.oci.referrers import list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.app.referrer_drift import (
    MAX_DEPTH,
    PASS_MINUTES,
    Image,
    Referrer,
    SubjectDrift,
    compare_subject,
    needs_target,
    pass_budget,
)
from replicator.domain.budgets import TokenBucket, limits_for
from replicator.domain.config import Settings
from replicator.domain.errors import DeferRequested, NotFoundError, RegistryError
from replicator.domain.manifests import child_descriptors
from replicator.domain.reference import ImageRef


class Pace:
    """Each registry's referrers budget in this process: a ``TokenBucket`` per registry
    with a ``referrers`` rate, and how many calls this pass may still make on it."""

    def __init__(
        self,
        settings: Settings,
        *,
        minutes: float | None = PASS_MINUTES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.minutes, self.sleep, self.clock = settings, minutes, sleep, clock
        self._buckets: dict[str, TokenBucket | None] = {}
        self._rates: dict[str, float | None] = {}
        self.spent: dict[str, int] = {}
        self._lock = threading.Lock()

    def rate(self, host: str) -> float | None:
        """``host``'s referrers calls a minute (None: no published or configured limit)."""
        if host not in self._rates:
            self._rates[host] = limits_for(self.settings, host).rate("referrers")
        return self._rates[host]

    def call(self, host: str) -> None:
        """Before one referrers call on ``host``: wait for the budget, count it."""
        with self._lock:
            if host not in self._buckets:
                rate = self.rate(host)
                self._buckets[host] = None if rate is None else TokenBucket(rate, clock=self.clock)
            bucket = self._buckets[host]
            self.spent[host] = self.spent.get(host, 0) + 1
        wait = bucket.take() if bucket is not None else 0.0
        if wait > 0:
            self.sleep(wait)

    def exhausted(self, hosts: Iterable[str]) -> bool:
        with self._lock:
            return any(
                (most := pass_budget(self.rate(h), self.minutes)) is not None
                and self.spent.get(h, 0) >= most
                for h in hosts
            )

    @property
    def requests(self) -> int:
        return sum(self.spent.values())


@dataclass(frozen=True)
class ImageCheck:
    image: Image
    missing: tuple[Referrer, ...] = ()
    extra: tuple[Referrer, ...] = ()
    subjects: int = 0  # manifests whose referrers were listed
    error: str | None = None  # the check could not finish: its findings are dropped


@dataclass(frozen=True)
class Checked:
    """What ``check_all`` did: the checks in order, and why it stopped short."""

    checks: tuple[ImageCheck, ...]
    stopped: str | None = None  # None: every image was checked


class ReferrerChecker:
    """Lists and compares the referrers of images on ``source`` and ``target``."""

    def __init__(
        self,
        registries: Registries,
        source: str,
        target: str,
        pace: Pace,
        *,
        delete_extra: bool = False,
        concurrency: int = 4,
    ) -> None:
        self.registries, self.source, self.target, self.pace = registries, source, target, pace
        self.delete_extra = delete_extra
        self.concurrency = max(1, concurrency)

    def check_all(self, images: Sequence[Image]) -> Checked:
        """Check ``images`` in order, ``concurrency`` at a time, until the pass's budget on
        either side is spent or a registry asks for a wait longer than a pass sleeps."""
        done: list[ImageCheck] = []
        hosts = (self.source, self.target)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="referrers") as pool:
            for start in range(0, len(images), self.concurrency):
                if self.pace.exhausted(hosts):
                    return Checked(tuple(done), "the pass's referrers budget is spent")
                try:
                    done += pool.map(self.check, images[start : start + self.concurrency])
                except DeferRequested as exc:
                    return Checked(tuple(done), f"a registry asked to wait: {exc}")
        return Checked(tuple(done))

    def check(self, image: Image) -> ImageCheck:
        try:
            return self._check(image)
        except DeferRequested:
            raise
        except (RegistryError, httpx.TransportError) as exc:
            return ImageCheck(image, error=f"referrers of {self.source}/{image.key}: {exc}")

    def _check(self, image: Image) -> ImageCheck:
        source = self.registries.client(self.source)
        try:
            top = source.get_manifest(ImageRef(self.source, image.repository, digest=image.digest))
        except NotFoundError:  # gone since the listing: the next tag listing says so
            return ImageCheck(image)
        level = [top.digest, *(str(d.get("digest")) for d in child_descriptors(top))]
        seen = set(level)
        missing: list[Referrer] = []
        extra: list[Referrer] = []
        listed = 0
        for _ in range(MAX_DEPTH):
            both: list[str] = []
            for subject in level:
                drift = self._subject(image.repository, subject)
                listed += 1
                missing += drift.missing
                extra += drift.extra
                both += drift.both
            level = [d for d in dict.fromkeys(both) if d not in seen]
            seen.update(level)
            if not level:
                break
        return ImageCheck(image, tuple(missing), tuple(extra), listed)

    def _subject(self, repository: str, subject: str) -> SubjectDrift:
        self.pace.call(self.source)
        src = self.registries.client(self.source)
        wanted = list_referrers(self.registries, src, repository, subject).descriptors
        there = None
        if needs_target(wanted, delete_extra=self.delete_extra):
            self.pace.call(self.target)
            dst = self.registries.client(self.target)
            found = list_referrers(self.registries, dst, repository, subject, fallback_first=True)
            there = found.descriptors
        return compare_subject(repository, subject, wanted, there, delete_extra=self.delete_extra)
