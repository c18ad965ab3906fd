"""Storage that provisions itself: a queue, table or blob container is created on first use.

A fresh storage account (Azurite, ``func start``, an account deployed by other IaC) holds
none of the replicator's queues, table or container. Every storage call goes through
``provisioned``: when the service answers that the *container* is missing (``QueueNotFound``,
``TableNotFound``, ``ContainerNotFound``), it is created (an existing one is fine: the call is
idempotent, so concurrent first uses are harmless) and the call is made once more. A missing
*item* (an entity, a blob: ``ResourceNotFound``, ``BlobNotFound``) is not a missing container
and is left to the caller.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

log = logging.getLogger(__name__)
T = TypeVar("T")

# The services' error codes for a missing container (Queue, Table and Blob service error
# codes in the Storage REST reference); Azurite answers the same codes.
MISSING_CONTAINER_CODES = frozenset({"QueueNotFound", "TableNotFound", "ContainerNotFound"})


def missing_container(exc: ResourceNotFoundError) -> bool:
    """True when the 404 says the queue, table or container itself does not exist."""
    code = getattr(exc, "error_code", None)  # a str, or the SDK's str enum (TableErrorCode)
    if code is not None:
        return str(getattr(code, "value", code)) in MISSING_CONTAINER_CODES
    # Some calls (azure-data-tables' create_entity) leave error_code unset: the code is
    # then only in the error's text, which quotes the service's answer.
    text = str(exc)
    return any(f'"{c}"' in text or f">{c}<" in text for c in MISSING_CONTAINER_CODES)


def create_quietly(create: Callable[[], object]) -> None:
    """Create a queue, table or container; one that already exists is what we wanted."""
    with contextlib.suppress(ResourceExistsError):
        create()


def provisioned(call: Callable[[], T], create: Callable[[], object], what: str) -> T:
    """``call()``; when it fails because ``what`` does not exist, create it and call once more."""
    try:
        return call()
    except ResourceNotFoundError as exc:
        if not missing_container(exc):
            raise
        log.info("%s did not exist yet: creating it", what)
    create_quietly(create)
    return call()
