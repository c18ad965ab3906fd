"""Bounded retries with exponential backoff and full jitter, and HTTP status -> error.

Only named transient failures are retried: 429 (honouring ``Retry-After``), 5xx,
timeouts and connection resets. Everything else is returned or raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx

from replicator.errors import (
    NotFoundError,
    PermanentRegistryError,
    RegistryError,
    TransientRegistryError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base: float = 0.2
    cap: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))

    def run(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` until it stops raising ``TransientRegistryError``, at most ``attempts``."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except TransientRegistryError as exc:
                if attempt >= self.attempts:
                    raise
                pause = self.delay(attempt, exc.retry_after)
                log.info("%s: %s; retry %d in %.2fs", what, exc, attempt, pause)
                self.sleep(pause)


def is_transient_status(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_for(response: httpx.Response, operation: str, reference: str) -> RegistryError:
    """The error to raise for an unsuccessful ``response``."""
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
    """The ``code`` of each entry of an OCI error body (``{"errors": [...]}``), read once."""
    try:
        if not response.is_stream_consumed:
            response.read()
        errors = response.json().get("errors") or []
        return [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]
    except (ValueError, AttributeError, httpx.HTTPError):
        return []


def expect(response: httpx.Response, ok: tuple[int, ...], operation: str, reference: str) -> None:
    """Raise the matching error unless ``response`` has one of the ``ok`` statuses."""
    if response.status_code in ok:
        return
    error = error_for(response, operation, reference)
    response.close()
    raise error
