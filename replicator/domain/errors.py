"""The exception tree. Each error says whether a retry can fix it.

::

    ReplicatorError
    ├── ConfigError                 start-up: fail fast, list every problem at once
    ├── InvalidEventError           permanent: log and drop, never retry
    ├── InvalidJobError             permanent: the message goes to poison with its reason
    ├── InvalidReferenceError       permanent
    ├── StackError                  the local stack could not start (says what to do)
    └── RegistryError(status, operation, reference)
        ├── TransientRegistryError  429, 5xx, timeouts, resets: retry with backoff
        │   ├── QueueUnavailableError  the jobs queue or status table cannot be reached
        │   └── DeferRequested      a wait too long to sleep: put the job back, delayed
        └── PermanentRegistryError  401/403/404, unsupported media type, digest mismatch
            ├── NotFoundError       the manifest or blob does not exist
            └── DigestMismatchError content does not match its digest (a lying source)

Successful branches are outcomes (``replicator.domain.model.Outcome``), never exceptions.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    """Base of every error the replicator raises on purpose."""

    retryable: bool = False


class ConfigError(ReplicatorError):
    """Settings are invalid. ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid settings: " + "; ".join(self.problems))


class InvalidEventError(ReplicatorError):
    """An Event Grid event that cannot be turned into jobs."""


class InvalidJobError(ReplicatorError):
    """A queue message that is not a valid job."""


class InvalidReferenceError(ReplicatorError, ValueError):
    """A registry, repository, tag or digest that is not valid."""


class StackError(ReplicatorError):
    """The local stack (registries, Azurite) could not start."""


class RegistryError(ReplicatorError):
    """A registry (or registry-like service) answered with an error."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        operation: str = "",
        reference: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.operation = operation
        self.reference = reference
        self.retry_after = retry_after
        super().__init__(message)


class TransientRegistryError(RegistryError):
    """A failure that a later attempt can fix."""

    retryable = True


class QueueUnavailableError(TransientRegistryError):
    """The jobs queue or the status table cannot be reached."""


class DeferRequested(TransientRegistryError):
    """A registry (or the fleet's pacer) asked to wait longer than a worker should sleep:
    the job goes back on the queue, visible again after ``delay_seconds``."""

    def __init__(
        self,
        message: str,
        *,
        delay_seconds: float,
        status: int | None = None,
        operation: str = "",
        reference: str = "",
    ) -> None:
        self.delay_seconds = max(0.0, float(delay_seconds))
        super().__init__(
            message,
            status=status,
            operation=operation,
            reference=reference,
            retry_after=self.delay_seconds,
        )


class PermanentRegistryError(RegistryError):
    """A failure that no retry will fix."""


class NotFoundError(PermanentRegistryError):
    """The manifest, blob or repository does not exist."""


class DigestMismatchError(PermanentRegistryError):
    """Content does not match the digest it was asked for."""
