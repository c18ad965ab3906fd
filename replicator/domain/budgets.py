"""Request budgets per registry and bucket, and the token bucket that paces by them.

ACR throttles with token buckets that refill continuously, per registry and per identity,
in requests a minute (MicrosoftDocs/azure-management-docs,
articles/container-registry/container-registry-skus.md, "ACR API request limits", as
summarised in /work/shared/reference/azure.md section 3). The depth of ACR's buckets is
not published, so the replicator never spends a minute's share in its first second: it
paces itself evenly with a bucket of its own whose burst is a few seconds' worth.

Where a budget comes from (``limits_for``), per bucket:

1. ``REPLICATOR_RATE_LIMITS`` for that login server (requests a minute, per registry);
2. else, for an ACR, its SKU's published per-registry figure (``REPLICATOR_REGISTRY_SKUS``,
   filled by Bicep from the registry's ``sku.name``; an ACR whose SKU is not given is
   taken as Standard, the lower figures, since Basic and Standard share one row);
3. else no limit (``None``).

The replicator's share of it: ``REPLICATOR_SOURCE_SHARE`` (default 0.5) for the source,
whose per-registry buckets also serve every production pull; ``REPLICATOR_TARGET_SHARE``
(default 1.0) for a DR target. For an ACR the result is also capped at the published
per-identity figure, since the whole fleet runs as one identity. A geo-replicated
registry is throttled per replica: the budget is for the replica the login server routes
the fleet to. The ``arm`` key budgets ImportImage calls (ARM limits those per subscription
and principal, not per registry): by default ARM's published regional write rate, 10 a
second (whether ImportImage counts as an ARM write is unconfirmed; pacing at it costs
nothing if it does not).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from replicator.domain.envjson import json_object
from replicator.domain.model import is_acr_host

if TYPE_CHECKING:
    from replicator.domain.config import Settings

Bucket = Literal["read", "write", "delete", "referrers", "token"]
BUCKETS: tuple[Bucket, ...] = get_args(Bucket)
ARM = "arm"  # the REPLICATOR_RATE_LIMITS key for ImportImage calls ({"write": N})
DEFAULT_SOURCE_SHARE = 0.5
DEFAULT_TARGET_SHARE = 1.0
DEFAULT_BURST_SECONDS = 2.0
SKUS = ("Basic", "Standard", "Premium")


@dataclass(frozen=True)
class Limits:
    """Requests a minute per bucket; ``None``: no published or configured limit."""

    read: float | None = None
    write: float | None = None
    delete: float | None = None
    referrers: float | None = None
    token: float | None = None

    def rate(self, bucket: Bucket) -> float | None:
        value: float | None = getattr(self, bucket)
        return value

    def over(self, other: Limits) -> Limits:
        """These limits where set, ``other``'s where these are silent."""
        return Limits(
            **{b: (mine if (mine := self.rate(b)) is not None else other.rate(b)) for b in BUCKETS}
        )

    def times(self, share: float) -> Limits:
        return Limits(
            **{b: (r * share if (r := self.rate(b)) is not None else None) for b in BUCKETS}
        )

    def at_most(self, cap: Limits) -> Limits:
        """Each bucket no higher than ``cap``'s (where ``cap`` has one)."""
        out: dict[str, float | None] = {}
        for b in BUCKETS:
            mine, most = self.rate(b), cap.rate(b)
            out[b] = mine if most is None else (most if mine is None else min(mine, most))
        return Limits(**out)

    def __str__(self) -> str:
        parts = [f"{b} {r:g}/min" for b in BUCKETS if (r := self.rate(b)) is not None]
        return ", ".join(parts) or "no limit"


# ACR's published table (reference section 3; container-registry-skus.md, read 2026-06):
# requests a minute. Basic and Standard share a row; Premium doubles most of it.
_ACR_REGISTRY = {
    "Standard": Limits(read=10_000, write=2_000, delete=1_000, referrers=500, token=10_000),
    "Premium": Limits(read=20_000, write=4_000, delete=4_000, referrers=2_000, token=20_000),
}
_ACR_IDENTITY = {
    "Standard": Limits(read=5_000, write=1_000, delete=500, referrers=250),
    "Premium": Limits(read=10_000, write=2_000, delete=2_000, referrers=1_000),
}
# ARM: regional token bucket per subscription and principal, writes 200 then 10 a second,
# reads 250 then 25 a second (reference section 3). ImportImage is a POST (a write).
_ARM_DEFAULT = Limits(read=25 * 60, write=10 * 60)


def _row(sku: str) -> str:
    name = sku.strip().capitalize()
    if name not in SKUS:
        raise ValueError(f"unknown ACR SKU {sku!r} (Basic, Standard or Premium)")
    return "Premium" if name == "Premium" else "Standard"


def acr_limits(sku: str) -> Limits:
    """ACR's published per-registry limits for ``sku`` (Basic, Standard or Premium)."""
    return _ACR_REGISTRY[_row(sku)]


def acr_identity_limits(sku: str) -> Limits:
    """ACR's published per-identity limits for ``sku`` (none published for OAuth)."""
    return _ACR_IDENTITY[_row(sku)]


def _rate(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    rate = float(value)
    return rate if math.isfinite(rate) and rate > 0 else None


def parse_rate_limits(raw: str, problems: list[str]) -> dict[str, Limits]:
    """``REPLICATOR_RATE_LIMITS``: ``{"<login server>": {"read": N, ...}, "arm": {"write": N}}``,
    requests a minute. Every problem is appended to ``problems``; the valid entries are kept."""
    name = "REPLICATOR_RATE_LIMITS"
    if not raw.strip():
        return {}
    shape = 'a JSON object, e.g. {"<login server>": {"read": 5000}}'
    loaded = json_object(raw, name, shape, problems)
    if loaded is None:
        return {}
    out: dict[str, Limits] = {}
    for key, entry in loaded.items():
        where = f"{name}[{key!r}]"
        registry = key.strip().lower()
        if not registry or any(c in registry for c in "/ \t@"):
            problems.append(f"{where}: the key must be a login server (or {ARM!r})")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where} must be an object of requests a minute per bucket")
            continue
        allowed: tuple[str, ...] = ("read", "write") if registry == ARM else BUCKETS
        unknown = sorted(set(entry) - set(allowed))
        if unknown:
            problems.append(
                f"{where} has unknown buckets: {', '.join(unknown)} (known: {', '.join(allowed)})"
            )
        values: dict[str, float] = {}
        for bucket in allowed:
            if bucket not in entry:
                continue
            rate = _rate(entry[bucket])
            if rate is None:
                problems.append(f"{where}.{bucket} must be a positive number of requests a minute")
                continue
            values[bucket] = rate
        if registry in out:
            problems.append(f"{where}: {registry} is given twice")
        out[registry] = Limits(**values)
    return out


def parse_share(raw: str, name: str, default: float, problems: list[str]) -> float:
    """A fraction in (0, 1] (``REPLICATOR_SOURCE_SHARE``, ``REPLICATOR_TARGET_SHARE``)."""
    text = raw.strip()
    if not text:
        return default
    try:
        share = float(text)
    except ValueError:
        share = math.nan
    if not (math.isfinite(share) and 0 < share <= 1):
        problems.append(f"{name} must be a fraction above 0 and at most 1, e.g. 0.5 (got {text!r})")
        return default
    return share


def parse_skus(raw: str, problems: list[str]) -> dict[str, str]:
    """``REPLICATOR_REGISTRY_SKUS``: ``{"<login server>": "Standard", ...}`` (Bicep fills it
    from each registry's ``sku.name``), or ``server=Sku,server=Sku``."""
    name = "REPLICATOR_REGISTRY_SKUS"
    text = raw.strip()
    if not text:
        return {}
    pairs: list[tuple[str, object]]
    if text.startswith("{"):
        loaded = json_object(text, name, "a JSON object of login server -> SKU", problems)
        if loaded is None:
            return {}
        pairs = list(loaded.items())
    else:
        pairs = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            server, sep, sku = part.partition("=")
            if not sep:
                problems.append(f"{name}: {part!r} is not <login server>=<SKU>")
                continue
            pairs.append((server, sku))
    out: dict[str, str] = {}
    for server, value in pairs:
        registry = str(server).strip().lower()
        if not isinstance(value, str):
            problems.append(f"{name}[{server!r}] must be a SKU name (Basic, Standard or Premium)")
            continue
        try:
            _row(value)
        except ValueError as exc:
            problems.append(f"{name}[{server!r}]: {exc}")
            continue
        if not is_acr_host(registry):
            problems.append(f"{name}[{server!r}] is not an ACR login server (*.azurecr.io)")
            continue
        out[registry] = value.strip().capitalize()
    return out


def limits_for(settings: Settings, registry: str) -> Limits:
    """The replicator fleet's budget for ``registry`` (or ``ARM``), requests a minute."""
    key = registry.strip().lower()
    configured = settings.rate_limits.get(key, Limits())
    if key == ARM:
        return configured.over(_ARM_DEFAULT)
    share = settings.source_share if key == settings.source.lower() else settings.target_share
    if not is_acr_host(key):
        return configured.times(share)
    sku = settings.skus.get(key, "Standard")
    budget = configured.over(acr_limits(sku)).times(share)
    return budget.at_most(acr_identity_limits(sku))


def budget_plan(settings: Settings) -> dict[str, Limits]:
    """Every registry's budget (and ARM's), for ``doctor`` and ``status``."""
    registries = sorted(settings.registries)
    return {**{r: limits_for(settings, r) for r in registries}, ARM: limits_for(settings, ARM)}


class TokenBucket:
    """Pacing, not bursts: ``rate_per_minute`` refilled continuously into a bucket of
    ``burst_seconds`` worth (at least one request).

    ``take(n)`` takes ``n`` tokens at once, going into debt when there are not enough, and
    answers how long the caller must wait before sending: callers that take one after
    another are spaced evenly (``1/rate``) in the order they asked. ``hold(seconds)``
    (a 429's ``Retry-After``) stops the refill until then and drops what was saved, so the
    registry is not met with a burst when the pause ends. Thread-safe; ``clock`` is
    injectable (monotonic seconds)."""

    def __init__(
        self,
        rate_per_minute: float,
        *,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(rate_per_minute) and rate_per_minute > 0):
            raise ValueError(f"a token bucket needs a positive rate, not {rate_per_minute!r}")
        if not (math.isfinite(burst_seconds) and burst_seconds >= 0):
            raise ValueError(f"burst_seconds must be zero or more, not {burst_seconds!r}")
        self.rate_per_minute = float(rate_per_minute)
        self.per_second = self.rate_per_minute / 60.0
        self.capacity = max(1.0, self.per_second * burst_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._stamp = clock()  # refill accrues from here (in the future while held)

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.per_second)
            self._stamp = now

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens; seconds to wait before sending them (0: now)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= n
            held = max(0.0, self._stamp - now)
            return held + max(0.0, -self._tokens) / self.per_second

    def give_back(self, n: float = 1.0) -> None:
        """Return ``n`` tokens taken but not used (never above the bucket's depth)."""
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + n)

    def hold(self, seconds: float) -> None:
        """No refill for ``seconds`` from now, and nothing saved (a 429's ``Retry-After``)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = min(self._tokens, 0.0)
            self._stamp = max(self._stamp, now + max(0.0, seconds))

    def available(self) -> float:
        """Tokens in the bucket now (negative: debt already promised to waiting callers)."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens


def lease_slot(
    tat: float, now: float, tokens: float, rate_per_minute: float, burst_seconds: float
) -> tuple[float, float]:
    """The fleet's shared bucket as one number (GCRA, the generic cell rate algorithm):
    ``tat`` is the time up to which the budget's timeline is already handed out. A lease of
    ``tokens`` gets the next stretch of it, ``tokens / rate`` long, starting no earlier
    than ``burst_seconds`` ago (what an idle bucket saved up). Returns ``(start, new tat)``:
    the lease's tokens are due one every ``60 / rate`` seconds from ``start``. Stretches
    never overlap, so however many instances lease, the tokens due in any ``T`` seconds are
    at most ``rate * (T + burst_seconds) / 60 + 1``."""
    start = max(tat, now - burst_seconds)
    return start, start + tokens * 60.0 / rate_per_minute


def pacing_limits(limits: Limits) -> Limits:
    """The rates to pace each kind of request at, so that a referrers call, which ACR
    counts against both ListReferrers and DataplaneRead, needs one token only: referrers
    calls at ``referrers`` (at most half of ``read``), every other read at what is left of
    ``read``. Together they never exceed ``read``."""
    read, referrers = limits.read, limits.referrers
    if read is None or referrers is None:
        return limits
    referrers = min(referrers, read / 2)
    return Limits(
        read=read - referrers,
        write=limits.write,
        delete=limits.delete,
        referrers=referrers,
        token=limits.token,
    )


# Requests one image job makes, per registry and bucket: a signed two-platform image copied
# over the data plane (an index, two manifests, their configs, about five layers each; the
# referrers of each of the three manifests; the target checks its blobs first, then
# uploads what it lacks). What the budgets sustain of such jobs (``jobs_per_minute``) is an
# estimate for ETAs (``status``, ``doctor``); the pacer counts each real request.
SOURCE_REQUESTS_PER_JOB = Limits(read=16, referrers=3)
TARGET_REQUESTS_PER_JOB = Limits(read=8, write=16)
# The least any copy job sends: on the source the tag resolved (HEAD) and the manifest read
# (GET), one referrers listing; on the target the manifest looked for (HEAD) and put (PUT):
# a retag, or an image whose blobs the target holds already. What the queue is spread by
# (``enqueue_per_minute``).
SOURCE_REQUESTS_LEAST = Limits(read=2, referrers=1)
TARGET_REQUESTS_LEAST = Limits(read=1, write=1)
DEFAULT_JOBS_PER_MINUTE = 600  # no registry has a budget: the spread of before budgets


def jobs_per_minute(settings: Settings) -> int:
    """How many typical image jobs a minute the budgets sustain (the slowest registry
    bucket, at ``SOURCE_``/``TARGET_REQUESTS_PER_JOB`` each): the rate ``status`` and
    ``doctor`` give a queue's or a backfill's ETA at. Not the rate jobs are enqueued at
    (``enqueue_per_minute``)."""
    return _per_minute(settings, SOURCE_REQUESTS_PER_JOB, TARGET_REQUESTS_PER_JOB)


def enqueue_per_minute(settings: Settings) -> int:
    """The jobs a minute reconcile, resync plans and ``sync --enqueue`` spread the queue
    at (the visibility delay): as many as the budgets could serve if every job were the
    cheapest a copy makes (``SOURCE_``/``TARGET_REQUESTS_LEAST``, at the rates the pacer
    paces by, ``pacing_limits``).

    Why so generous: the request pacer already keeps every registry within its budget,
    whatever the jobs cost, and a job that finds no budget waits (in process, then as a
    visibility delay that burns no dequeue count). A spread at a typical image's cost
    (``jobs_per_minute``: 62 a minute into a Standard target) held smaller images back
    while most of the budget idled, and made a backfill of them many times slower than the
    registries allow. Spread at the cheapest job, the pacer, not the spread, is the limit
    for any image that costs more; the queue never runs ahead of what the budgets could
    possibly serve. Between two Standard ACRs: 250 a minute, the source's referrers share
    (one listing a job)."""
    limits = {r: pacing_limits(limits_for(settings, r)) for r in settings.registries}
    return _per_minute(settings, SOURCE_REQUESTS_LEAST, TARGET_REQUESTS_LEAST, limits)


def _per_minute(
    settings: Settings,
    source_cost: Limits,
    target_cost: Limits,
    limits: dict[str, Limits] | None = None,
) -> int:
    """Jobs a minute the slowest registry bucket allows at these costs per job."""
    best: float | None = None
    for registry in sorted(settings.registries):
        per_job = source_cost if registry == settings.source else target_cost
        budget = limits[registry] if limits is not None else limits_for(settings, registry)
        for bucket in BUCKETS:
            rate, need = budget.rate(bucket), per_job.rate(bucket)
            if rate is not None and need:
                best = rate / need if best is None else min(best, rate / need)
    return DEFAULT_JOBS_PER_MINUTE if best is None else max(1, int(best))


@dataclass(frozen=True)
class BudgetState:
    """One registry bucket as the fleet shares it (``status``): its budget, the tokens
    leased in the last whole minute, how far ahead the budget is handed out, and the end
    of the last 429 pause (wall-clock seconds)."""

    registry: str
    bucket: str
    rate_per_minute: float
    leased_last_minute: float
    tat: float
    held_until: float

    def throttled(self, now: float) -> bool:
        return self.held_until > now

    def used(self) -> float:
        """The fraction of the budget leased in the last whole minute."""
        return self.leased_last_minute / self.rate_per_minute if self.rate_per_minute else 0.0

    def saturated(self, now: float) -> bool:
        """Every token is handed out up to now or beyond: requests wait for budget."""
        return self.tat >= now
