"""The one retry layer, bounded reads of other parties' bodies, and HTTP status -> error.

Retries. Only named transient failures are retried: 429 (honouring ``Retry-After`` in
both its forms, seconds and HTTP-date, RFC 9110 section 10.2.3), 5xx, timeouts and
connection resets. Everything else is returned or raised at once. One ``RetryPolicy``
serves the registry client, listings, token calls and blob copies, and an *operation*
(one blob copy, one manifest fetch, one listing request...) has one budget of attempts
and time: ``run`` calls nested inside it (the idempotent steps of a blob copy: HEAD,
starting an upload, the source GET) draw from that budget instead of opening their own,
so retries never multiply. Pauses go through a ``Pacer`` (asked before each request,
told of each 429), a no-op by default, where a fleet-wide budget can plug in; a pause
longer than ``defer_after`` raises ``DeferRequested`` instead of sleeping, for the worker
to put the job back on the queue with that visibility delay.

Bodies. Whatever another party sends is read bounded: ``read_limited`` reads a body
whole up to a limit and fails past it (manifests, listings, token answers); an error
answer's body is only ever read for its first ``ERROR_BODY_BYTES`` (enough for the
``{"errors": [...]}`` codes of a message).
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from replicator.domain.errors import (
    DeferRequested,
    NotFoundError,
    PermanentRegistryError,
    RegistryError,
    TransientRegistryError,
)
from replicator.domain.manifests import MAX_MANIFEST_BYTES

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_RETRY_AFTER = 60.0  # the longest pause slept in place (without ``defer_after``)
ERROR_BODY_BYTES = 8 * 1024  # of an error answer: its error codes, never the whole body
READ_CHUNK = 64 * 1024


class Pacer(Protocol):
    """Where the retry layer takes its pauses: asked before every request to a registry
    (``bucket``: ``"read"``, ``"write"``, ``"delete"``, ``"referrers"`` or ``"token"``, ACR's
    request-limit buckets, ``bucket_of``), told of every 429. The budgets implement this
    (``replicator.adapters.budget_pacer``); the default does nothing."""

    def before(self, registry: str, bucket: str) -> float:
        """Seconds to wait before sending (0: go now)."""
        ...

    def throttled(self, registry: str, bucket: str, retry_after: float | None) -> None:
        """The registry answered 429, with this ``Retry-After`` (seconds) if it said one."""
        ...


class NoPacer:
    """Never waits, remembers nothing."""

    def before(self, registry: str, bucket: str) -> float:
        return 0.0

    def throttled(self, registry: str, bucket: str, retry_after: float | None) -> None:
        return None


def bucket_of(method: str, path: str = "") -> str:
    """A request's bucket of ACR's limits (reference section 3): ``token`` for the token
    endpoints, ``referrers`` for the referrers API, ``delete``, ``read`` (GET, HEAD) or
    ``write``."""
    if "/oauth2/" in path:
        return "token"
    verb = method.upper()
    if verb == "GET" and "/referrers/" in path:
        return "referrers"
    if verb == "DELETE":
        return "delete"
    return "read" if verb in ("GET", "HEAD") else "write"


def _on_registry(registry: str, url: httpx.URL | None) -> bool:
    """False for a request off the registry's host (ACR redirects blobs to storage):
    not the registry's budget."""
    return url is None or url.host == (urlsplit("//" + registry).hostname or registry)


class Budget:
    """What is left of one operation's attempts and time (shared by its nested steps)."""

    def __init__(self, what: str, retries: int, deadline: float) -> None:
        self.what = what
        self.retries = retries  # failures that may still be retried
        self.deadline = deadline
        self._lock = threading.Lock()

    def take(self, pause: float, now: float) -> bool:
        """Spend one retry that waits ``pause`` seconds first; False when none is left."""
        with self._lock:
            if self.retries <= 0 or now + pause > self.deadline:
                return False
            self.retries -= 1
            return True


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "replicator_retry_budget", default=None
)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries and ``seconds`` of time per operation, backoff with full jitter.

    ``defer_after``: a pause longer than this (a long ``Retry-After``, or the pacer's) is
    not slept: ``DeferRequested`` says how long to wait instead (None: sleep it, capped at
    ``MAX_RETRY_AFTER``)."""

    attempts: int = 16  # a blob under a 30% failure mix needs about 5 (tests: 20 runs)
    base: float = 0.2
    cap: float = 10.0
    seconds: float = 300.0
    defer_after: float | None = MAX_RETRY_AFTER
    pacer: Pacer = field(default_factory=NoPacer, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based)."""
        if retry_after is not None:
            wait = max(retry_after, 0.0)
            return wait if self.defer_after is not None else min(wait, MAX_RETRY_AFTER)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))

    @contextmanager
    def operation(self, what: str) -> Iterator[Budget]:
        """One budget for everything retried inside (joined if one is open already)."""
        found = _current.get()
        if found is not None:
            yield found
            return
        budget = Budget(what, max(0, self.attempts - 1), self.clock() + self.seconds)
        token = _current.set(budget)
        try:
            yield budget
        finally:
            _current.reset(token)

    def run(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` until it stops raising ``TransientRegistryError`` or the operation's
        budget runs out (then the last error is raised)."""
        with self.operation(what) as budget:
            attempt = 0
            while True:
                attempt += 1
                try:
                    return call()
                except DeferRequested:
                    raise
                except TransientRegistryError as exc:
                    pause = self.delay(attempt, exc.retry_after)
                    self._defer_if_long(pause, exc)
                    if not budget.take(pause, self.clock()):
                        raise
                    log.info("%s: %s; retry %d in %.2fs", what, exc, attempt, pause)
                    self.pause(pause, exc)

    def pause(self, seconds: float, cause: TransientRegistryError | None = None) -> None:
        """Sleep ``seconds``, or raise ``DeferRequested`` when that is over ``defer_after``."""
        self._defer_if_long(seconds, cause)
        self.sleep(min(max(seconds, 0.0), MAX_RETRY_AFTER))

    def _defer_if_long(self, seconds: float, cause: TransientRegistryError | None) -> None:
        if self.defer_after is None or seconds <= self.defer_after:
            return
        raise DeferRequested(
            f"{cause or 'the registry pacer'}: asked to wait {seconds:.0f}s; deferred",
            delay_seconds=seconds,
            status=cause.status if cause else None,
            operation=cause.operation if cause else "",
            reference=cause.reference if cause else "",
        )

    def before_request(self, registry: str, method: str, url: httpx.URL | None = None) -> None:
        """Ask the pacer before a request; wait (or defer) as it says."""
        if not _on_registry(registry, url):
            return
        wait = self.pacer.before(registry, bucket_of(method, url.path if url else ""))
        if wait > 0:
            self.pause(wait)

    def throttled(
        self, registry: str, method: str, retry_after: float | None, url: httpx.URL | None = None
    ) -> None:
        if _on_registry(registry, url):
            self.pacer.throttled(registry, bucket_of(method, url.path if url else ""), retry_after)


# -- statuses and errors ------------------------------------------------------------------
def is_transient_status(status: int) -> bool:
    return status == 429 or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - reference)


def retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def error_for(response: httpx.Response, operation: str, reference: str) -> RegistryError:
    """The error to raise for an unsuccessful ``response`` (its body read bounded)."""
    status = response.status_code
    detail = _detail(response)
    message = f"{operation} {reference}: HTTP {status}" + (f" ({detail})" if detail else "")
    kwargs = {"status": status, "operation": operation, "reference": reference}
    if is_transient_status(status):
        return TransientRegistryError(message, retry_after=retry_after(response), **kwargs)  # type: ignore[arg-type]
    if status == 404:
        return NotFoundError(message, **kwargs)  # type: ignore[arg-type]
    return PermanentRegistryError(message, **kwargs)  # type: ignore[arg-type]


def transport_error(exc: httpx.HTTPError, operation: str, reference: str) -> TransientRegistryError:
    return TransientRegistryError(
        f"{operation} {reference}: {type(exc).__name__}: {exc}",
        operation=operation,
        reference=reference,
    )


def _detail(response: httpx.Response) -> str:
    """The registry's error codes, if its body says some (never the body itself)."""
    return ", ".join(error_codes(response))[:200]


def error_codes(response: httpx.Response) -> list[str]:
    """The ``code`` of each entry of an OCI error body (``{"errors": [...]}``), from its
    first ``ERROR_BODY_BYTES`` at most."""
    try:
        body = error_body(response)
        errors = json.loads(body).get("errors") or []
        return [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]
    except (ValueError, AttributeError, TypeError):
        return []


def error_body(response: httpx.Response) -> bytes:
    """The first ``ERROR_BODY_BYTES`` of ``response``'s body; a streamed body is read that
    far once and closed (the rest is never read): ``bounded_error`` keeps what it read."""
    try:
        return response.content[:ERROR_BODY_BYTES]
    except httpx.ResponseNotRead:
        pass
    try:
        return read_prefix(response, ERROR_BODY_BYTES)
    except (httpx.HTTPError, httpx.StreamError):
        return b""
    finally:
        response.close()


def bounded_error(response: httpx.Response) -> httpx.Response:
    """``response`` (an error answer, streamed) with its body read to ``ERROR_BODY_BYTES``
    at most and its connection released: what the caller may read again and again."""
    head = error_body(response)
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=head,
        request=response.request,
        extensions=response.extensions,
    )


def read_prefix(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a streamed body, then stop reading."""
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes(READ_CHUNK):
        chunks.append(chunk[: limit - total])
        total += len(chunks[-1])
        if total >= limit:
            break
    return b"".join(chunks)


def expect(response: httpx.Response, ok: tuple[int, ...], operation: str, reference: str) -> None:
    """Raise the matching error unless ``response`` has one of the ``ok`` statuses."""
    if response.status_code in ok:
        return
    error = error_for(response, operation, reference)
    response.close()
    raise error


def read_limited(
    response: httpx.Response,
    reference: str,
    *,
    limit: int = MAX_MANIFEST_BYTES,
    what: str = "manifest",
) -> bytes:
    """The body of a streamed response, refused before reading when it declares more than
    ``limit`` bytes and cut off as soon as it sends more (an endless answer)."""
    operation = f"GET {what}"
    try:
        declared = int(response.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise PermanentRegistryError(
            f"{what} {reference} is {declared} bytes, over the {limit} byte limit",
            operation=operation,
            reference=reference,
        )
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_bytes(READ_CHUNK):
            total += len(chunk)
            if total > limit:
                raise PermanentRegistryError(
                    f"{what} {reference} exceeds the {limit} byte limit",
                    operation=operation,
                    reference=reference,
                )
            chunks.append(chunk)
    except httpx.TransportError as exc:
        raise transport_error(exc, operation, reference) from None
    return b"".join(chunks)
