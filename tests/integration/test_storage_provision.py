"""A fresh storage account (no queue, no table): the first event and the first job create
what they need, and no raw ``ResourceNotFoundError`` reaches a log or a caller."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import azure.functions as func
import pytest

from devstack.localrun import queue_message
from devstack.localruntime import LocalRuntime
from devstack.localstack import Azurite, Registry
from devstack.localworker import deliver_push, drain, unprovisioned_runtime
from devstack.testimages import push_test_image
from replicator.domain.model import CopyJob
from replicator.domain.reference import ImageRef
from replicator.functions import triggers

RAW = ("ResourceNotFound", "QueueNotFound", "TableNotFound", "Traceback")


def _queue_names(runtime: LocalRuntime) -> set[str]:
    from azure.storage.queue import QueueServiceClient

    storage = runtime.settings.storage
    assert storage is not None and storage.connection_string is not None  # Azurite's
    service = QueueServiceClient.from_connection_string(storage.connection_string)
    return {q.name for q in service.list_queues()}


@pytest.fixture
def fresh_account(
    registry_pair: tuple[Registry, Registry],
    fresh_azurite: Azurite,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[LocalRuntime]:
    """A worker on a storage account with no queue and no table yet, logging at DEBUG."""
    source, target = registry_pair
    with (
        caplog.at_level(logging.DEBUG, logger="replicator"),
        unprovisioned_runtime(source, target, fresh_azurite) as (runtime, _),
    ):
        yield runtime


def raw_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if any(w in r.getMessage() for w in RAW)]


def test_first_event_and_first_job_on_a_fresh_account(
    fresh_account: LocalRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = fresh_account
    source = runtime.settings.source
    assert _queue_names(runtime) == set()
    ref = ImageRef(source, "team/app", "v1")
    pushed = push_test_image(runtime.registries, ref)
    deliver_push(ref, pushed.digest)  # the first event creates the jobs queue
    assert "replication-jobs" in _queue_names(runtime)
    stats = drain(runtime)  # the first job creates the status table
    assert stats.succeeded == 1 and stats.poisoned == 0
    (row,) = runtime.status.images("team/app", "v1")
    assert row["outcome"] == "copied"
    assert raw_errors(caplog) == []


def test_status_replay_and_poison_on_a_fresh_account(
    fresh_account: LocalRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = fresh_account
    answer = triggers.status(func.HttpRequest("GET", "/api/status", body=b"", params={}))
    assert answer.status_code == 200, answer.get_body()
    image = triggers.status(
        func.HttpRequest("GET", "/api/status", body=b"", params={"repository": "team/app"})
    )
    assert image.status_code == 200, image.get_body()
    replay = triggers.replay(func.HttpRequest("POST", "/api/replay", body=b"{}"))
    assert replay.status_code == 200, replay.get_body()
    triggers.replicate(queue_message("m1", b"not json"))
    (poisoned,) = runtime.queue.client(runtime.queue.poison_name).peek_messages()
    assert "not JSON" in poisoned.content
    assert (
        runtime.status.last_result(
            CopyJob.from_dict(
                {
                    "version": 1,
                    "action": "push",
                    "source": runtime.settings.source,
                    "target": runtime.settings.targets[0].login_server,
                    "repository": "team/app",
                    "digest": "sha256:" + "0" * 64,
                }
            )
        )
        is None
    )
    assert raw_errors(caplog) == []
