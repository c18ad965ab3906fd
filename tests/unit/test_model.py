from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.domain.errors import InvalidJobError
from replicator.domain.model import Action, CopyJob, JobResult, Outcome

DIGEST = "sha256:" + "0f" * 32
JOB = CopyJob(
    action=Action.PUSH,
    source="src.azurecr.io",
    target="dr.azurecr.io",
    repository="team/app",
    digest=DIGEST,
    tag="v1",
    pushed_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def test_round_trip() -> None:
    assert CopyJob.from_json(JOB.to_json()) == JOB
    assert CopyJob.from_json(JOB.to_json().encode()) == JOB


def test_job_id_is_content_derived() -> None:
    assert JOB.job_id == JOB.evolve(event_id="other", origin="reconcile").job_id
    assert JOB.job_id != JOB.evolve(tag="v2", job_id="").job_id
    assert JOB.job_id != JOB.evolve(target="dr2.azurecr.io", job_id="").job_id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version"),
        ({"action": "move"}, "action"),
        ({"source": None}, "source"),
        ({"digest": "sha256:1"}, "invalid digest"),
        ({"repository": "../x"}, "invalid repository"),
        ({"tag": ["v1"]}, "tag must be a string"),
        ({"pushed_at": "soon"}, "ISO 8601"),
        ({"job_id": "forged"}, "does not match"),
        ({"origin": "mars"}, "origin"),
    ],
    ids=[
        "version",
        "action",
        "missing-source",
        "digest",
        "repository",
        "tag-type",
        "time",
        "forged-id",
        "origin",
    ],
)
def test_invalid_jobs(change: dict[str, Any], message: str) -> None:
    data = {**json.loads(JOB.to_json()), **change}
    with pytest.raises(InvalidJobError, match=message):
        CopyJob.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe", b"[1,2]", b"{", b"x" * 70_000, "[" * 5000],
    ids=["not-utf8", "not-object", "not-json", "oversize", "deep"],
)
def test_garbage(raw: bytes | str) -> None:
    with pytest.raises(InvalidJobError):
        CopyJob.from_json(raw)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.dictionaries(
            st.sampled_from(list(json.loads(JOB.to_json()))),
            st.none() | st.integers() | st.text(max_size=70) | st.just(DIGEST),
        ).map(json.dumps),
    )
)
def test_decoder_never_crashes(raw: bytes | str) -> None:
    try:
        job = CopyJob.from_json(raw)
    except InvalidJobError:
        return
    assert CopyJob.from_json(job.to_json()) == job


def test_lag_and_outcomes() -> None:
    result = JobResult(JOB, Outcome.COPIED, finished_at=datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC))
    assert result.lag_seconds == 3.0
    assert Outcome.COPIED.succeeded and not Outcome.FAILED.succeeded
