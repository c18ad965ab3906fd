"""ACR's request throttling in front of a real registry, from its published behaviour.

What ACR publishes (MicrosoftDocs/azure-management-docs, articles/container-registry/
container-registry-skus.md, "ACR API request limits"; /work/shared/reference/azure.md
section 3): token buckets per registry and per identity, one per kind of request
(DataplaneRead, DataplaneWrite, DataplaneDelete, ListReferrers, OAuth), in requests a
minute, refilling continuously; a referrers call counts against both ListReferrers and
DataplaneRead; an empty bucket answers 429 with ``Retry-After``, which counts down across
repeated 429s; the per-identity rows are half the per-registry ones (none for OAuth).

What it does not publish, and this double assumes: the buckets' depth (``depth_seconds``
of the rate; tests run at least 10 s and 60 s), that a refused request takes no token, and
the 429 body, for which it sends the distribution spec's error shape with ACR's code
``TOOMANYREQUESTS``. Its limits are whatever the test gives, so the suite runs scaled down.

``ThrottlingRegistry`` is ``hostile.HostileRegistry`` (a proxy that forwards to the real
registry) with a ``Throttle`` in front. Identities: the ``Authorization`` header's
principal, else ``identify(headers)`` (tests without auth tell clients apart by
``User-Agent``), else ``anonymous``. Every request it let through is in ``accepted``,
every one it refused in ``refused``: the counts at the registry that tests assert on.
``most_in_window`` and ``FakeClock`` are the window count and the hand-moved clock the
budget tests and benches measure pacing with.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from devstack.hostile import Answer, HostileRegistry

BUCKETS = ("read", "write", "delete", "referrers", "token")


class FakeClock:
    """A clock for an injectable ``clock`` (seconds) that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def most_in_window(times: list[float], seconds: float) -> int:
    """The most of the sorted ``times`` in any window of ``seconds`` (a sliding window)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - seconds:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def acr_bucket(method: str, path: str) -> tuple[str, ...]:
    """The buckets a request draws from, as ACR's page describes them."""
    route = urlsplit(path).path
    if route.startswith("/oauth2/"):
        return ("token",)
    if method == "GET" and "/referrers/" in route:
        return ("referrers", "read")
    if method == "DELETE":
        return ("delete",)
    return ("read",) if method in ("GET", "HEAD") else ("write",)


@dataclass
class _Bucket:
    rate_per_minute: float
    depth_seconds: float
    tokens: float
    stamp: float

    @property
    def depth(self) -> float:
        return max(1.0, self.rate_per_minute * self.depth_seconds / 60.0)

    def refill(self, now: float) -> None:
        self.tokens = min(
            self.depth, self.tokens + (now - self.stamp) * self.rate_per_minute / 60.0
        )
        self.stamp = now

    def wait(self) -> float:
        """Seconds until one token is back (0: there is one)."""
        return max(0.0, (1.0 - self.tokens) * 60.0 / self.rate_per_minute)


@dataclass(frozen=True)
class Counted:
    at: float
    identity: str
    buckets: tuple[str, ...]
    method: str
    path: str


@dataclass
class Throttle:
    """Per-registry ``limits`` (bucket -> requests a minute) and per-identity ones (half,
    as ACR's table, unless given), buckets ``depth_seconds`` deep, full at the start."""

    limits: Mapping[str, float]
    depth_seconds: float = 10.0
    identity_limits: Mapping[str, float] | None = None
    clock: Callable[[], float] = time.time
    on: bool = True  # off: everything passes uncounted (seeding the registry)
    accepted: list[Counted] = field(default_factory=list)
    refused: list[tuple[Counted, int]] = field(default_factory=list)  # with its Retry-After
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.identity_limits is None:
            self.identity_limits = {b: r / 2 for b, r in self.limits.items() if b != "token"}

    def _bucket(self, owner: str, bucket: str, rate: float, now: float) -> _Bucket:
        found = self._buckets.get((owner, bucket))
        if found is None:
            found = self._buckets[(owner, bucket)] = _Bucket(rate, self.depth_seconds, 0.0, now)
            found.tokens = found.depth
        return found

    def admit(self, identity: str, method: str, path: str) -> int | None:
        """None: let it through (its tokens taken); else the ``Retry-After`` seconds."""
        assert self.identity_limits is not None
        kinds = acr_bucket(method, path)
        if not self.on:
            return None
        with self._lock:
            now = self.clock()
            needed: list[_Bucket] = []
            for kind in kinds:
                for owner, table in (("registry", self.limits), (identity, self.identity_limits)):
                    rate = table.get(kind)
                    if rate is not None:
                        bucket = self._bucket(owner, kind, rate, now)
                        bucket.refill(now)
                        needed.append(bucket)
            counted = Counted(now, identity, kinds, method, path)
            wait = max((b.wait() for b in needed), default=0.0)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                self.refused.append((counted, retry_after))
                return retry_after
            for bucket in needed:
                bucket.tokens -= 1.0
            self.accepted.append(counted)
            return None

    def count(self, identity: str, bucket: str, start: float, seconds: float) -> int:
        with self._lock:
            return sum(
                1
                for c in self.accepted
                if c.identity == identity
                and bucket in c.buckets
                and start <= c.at < start + seconds
            )

    def most_in_window(self, identity: str, bucket: str, seconds: float) -> int:
        """The most requests of ``identity`` in ``bucket`` let through in any window."""
        with self._lock:
            times = sorted(
                c.at for c in self.accepted if c.identity == identity and bucket in c.buckets
            )
        return most_in_window(times, seconds)

    def refused_of(self, identity: str) -> list[tuple[Counted, int]]:
        with self._lock:
            return [r for r in self.refused if r[0].identity == identity]


def too_many_requests(retry_after: int) -> Answer:
    body = {
        "errors": [
            {
                "code": "TOOMANYREQUESTS",
                "message": f"toomanyrequests: too many requests; retry after {retry_after} seconds",
                "detail": None,
            }
        ]
    }
    return Answer.json(429, body, **{"Retry-After": str(retry_after)})


class ThrottlingRegistry(HostileRegistry):
    """The real registry at ``upstream`` behind ACR-like throttling."""

    def __init__(
        self,
        upstream: str,
        throttle: Throttle,
        *,
        identify: Callable[[dict[str, str]], str | None] = lambda _h: None,
        api: bool = True,
    ) -> None:
        super().__init__(upstream, api=api)  # the referrers API, as ACR has
        self.throttle = throttle
        self.identify = identify

    def identity(self, headers: dict[str, str]) -> str:
        auth = headers.get("authorization", "")
        if auth:
            return auth.split(" ", 1)[-1][:40]
        return self.identify(headers) or "anonymous"

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        retry_after = self.throttle.admit(self.identity(headers), method, path)
        if retry_after is not None:
            return too_many_requests(retry_after)
        return super().answer(method, path, headers, body)
