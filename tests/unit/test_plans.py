"""Resync plan messages (``replication-plans``): round trip, validation, progress writes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from replicator.app.plans import PROGRESS_EVERY, PlanRequest, _Progress
from replicator.domain.errors import InvalidJobError
from replicator.domain.model import Action, CopyJob

GOOD = PlanRequest("src.example.io", ("dr.example.io",), repository="team/app", dry_run=True)


def test_plan_request_round_trips() -> None:
    assert PlanRequest.from_json(GOOD.to_json()) == GOOD
    assert len(GOOD.plan_id) == 32 and GOOD.plan_id != PlanRequest("a.io", ()).plan_id


def _with(**changes: Any) -> bytes:
    data = json.loads(GOOD.to_json())
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "version 1"),
        (_with(version=2), "version 1"),
        (_with(plan_id="../x"), "plan_id"),
        (_with(targets="dr.example.io"), "targets"),
        (_with(targets=[5]), "targets"),
        (_with(dry_run="yes"), "dry_run"),
        (_with(source="http://evil/x"), "invalid registry"),
        (_with(repository="UPPER"), "invalid repository"),
        (_with(requested_at="yesterday"), "ISO 8601"),
    ],
    ids=[
        "not-json",
        "array",
        "version",
        "plan-id",
        "targets-type",
        "targets-items",
        "dry-run",
        "source",
        "repository",
        "requested-at",
    ],
)
def test_plan_request_refuses_bad_messages(body: bytes, message: str) -> None:
    with pytest.raises(InvalidJobError, match=message):
        PlanRequest.from_json(body)


def test_progress_is_written_every_so_many_jobs() -> None:
    sent: list[CopyJob] = []
    updates: list[dict[str, object]] = []
    runtime = SimpleNamespace(
        queue=SimpleNamespace(send=lambda job, delay_seconds=0: sent.append(job)),
        status=SimpleNamespace(update_plan=lambda plan_id, **fields: updates.append(fields)),
    )
    progress = _Progress(runtime, GOOD.plan_id)  # type: ignore[arg-type]
    job = CopyJob(Action.PUSH, "src.example.io", "dr.example.io", "app", "sha256:" + "a" * 64)
    for _ in range(2 * PROGRESS_EVERY + 1):
        progress.send(job)
    assert len(sent) == 2 * PROGRESS_EVERY + 1
    assert updates == [{"enqueued": PROGRESS_EVERY}, {"enqueued": 2 * PROGRESS_EVERY}]
