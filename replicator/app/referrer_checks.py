"""Referrer checks against the registries, within each pass's share of the budget.

``ReferrerChecker.check(image)`` asks the ``ReferrerLister`` port for the image's
manifests (the index and its children), lists the referrers of each on both sides (the
API, else the fallback tag; DR only where ``needs_target`` says so) and compares them
(``replicator.app.referrer_drift.compare_subject``), level by level to ``MAX_DEPTH``.

One budget paces: every referrers call goes through the registry client's retry layer,
which asks the runtime's budget pacer first (``replicator.adapters.budget_pacer``, fleet
wide in the app, in-process for ``diff``). ``Pace`` only counts: it bounds the calls a
pass makes on each registry to ``PASS_MINUTES`` of the rate that pacer spends referrers
calls at (``referrer_rate``: ``limits_for`` through ``pacing_limits``), so a pass takes at
most that many minutes of budget, and sleeps never. A check that cannot finish is
reported with its error and its findings dropped, so a half-read listing never becomes a
job.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from replicator.app.ports import ReferrerLister
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
from replicator.domain.budgets import limits_for, pacing_limits
from replicator.domain.config import Settings
from replicator.domain.errors import DeferRequested, RegistryError


def referrer_rate(settings: Settings, host: str) -> float | None:
    """The referrers calls a minute the budget pacer lets through to ``host``: its
    ``referrers`` pacing rate, else (no referrers limit) the ``read`` one it draws from;
    None when neither is limited."""
    limits = pacing_limits(limits_for(settings, host))
    rate = limits.rate("referrers")
    return rate if rate is not None else limits.rate("read")


class Pace:
    """How many referrers calls a pass made on each registry, and whether it may make
    more: ``minutes`` of each registry's ``referrer_rate`` (None: no bound)."""

    def __init__(self, settings: Settings, *, minutes: float | None = PASS_MINUTES) -> None:
        self.settings, self.minutes = settings, minutes
        self._rates: dict[str, float | None] = {}
        self.spent: dict[str, int] = {}
        self._lock = threading.Lock()

    def rate(self, host: str) -> float | None:
        """``host``'s referrers calls a minute (None: no published or configured limit)."""
        if host not in self._rates:
            self._rates[host] = referrer_rate(self.settings, host)
        return self._rates[host]

    def bound(self, host: str) -> int | None:
        """The calls one pass may make on ``host`` (None: no bound)."""
        return pass_budget(self.rate(host), self.minutes)

    def call(self, host: str) -> None:
        """Count one referrers call on ``host`` (the registry client paces it)."""
        with self._lock:
            self.spent[host] = self.spent.get(host, 0) + 1

    def exhausted(self, hosts: Iterable[str]) -> bool:
        with self._lock:
            return any(
                (most := self.bound(h)) is not None and self.spent.get(h, 0) >= most for h in hosts
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
    """Lists and compares the referrers of images on ``source`` and ``target``.

    The pass's bound is checked before each group of ``concurrency`` images, so a pass
    may go over it by what the images under way when it was reached still list (at most
    ``concurrency`` images' calls)."""

    def __init__(
        self,
        lister: ReferrerLister,
        source: str,
        target: str,
        pace: Pace,
        *,
        delete_extra: bool = False,
        concurrency: int = 4,
    ) -> None:
        self.lister, self.source, self.target, self.pace = lister, source, target, pace
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
        top = self.lister.subjects(self.source, image.repository, image.digest)
        if top is None:  # gone since the listing: the next tag listing says so
            return ImageCheck(image)
        level = list(top)
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
        wanted = self.lister.referrers(self.source, repository, subject)
        there = None
        if needs_target(wanted, delete_extra=self.delete_extra):
            self.pace.call(self.target)
            there = self.lister.referrers(self.target, repository, subject, fallback_first=True)
        return compare_subject(repository, subject, wanted, there, delete_extra=self.delete_extra)
