"""Resync plan messages (``replication-plans``): round trip, validation, progress writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from replicator.app.plans import PROGRESS_EVERY, PlanRequest, _Progress
from replicator.domain.config import Settings
from replicator.domain.errors import InvalidJobError
from replicator.domain.model import Action, CopyJob, Target
from tests.fakes import FakeStatus, fake_runtime

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


@dataclass
class PlanUpdates(FakeStatus):
    """The status table's fake, recording each plan-row update as it comes."""

    updates: list[dict[str, object]] = field(default_factory=list)

    def update_plan(self, plan_id: str, **fields: object) -> None:
        self.updates.append(fields)
        super().update_plan(plan_id, **fields)


def test_progress_is_written_every_so_many_jobs() -> None:
    fakes = fake_runtime(Settings(source="src.example.io", targets=(Target("dr.example.io"),)))
    fakes.runtime.status = status = PlanUpdates()
    progress = _Progress(fakes.runtime, GOOD.plan_id)
    job = CopyJob(Action.PUSH, "src.example.io", "dr.example.io", "app", "sha256:" + "a" * 64)
    for _ in range(2 * PROGRESS_EVERY + 1):
        progress.send(job)
    assert len(fakes.queue.jobs) == 2 * PROGRESS_EVERY + 1
    assert status.updates == [{"enqueued": PROGRESS_EVERY}, {"enqueued": 2 * PROGRESS_EVERY}]
