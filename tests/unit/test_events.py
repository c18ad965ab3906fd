from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.domain.config import load_settings
from replicator.domain.errors import InvalidEventError
from replicator.domain.events import RegistryEvent, decide, parse_event
from replicator.domain.model import Action

DIGEST = "sha256:" + "57" * 32
TOPIC = (
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/srcreg1"
)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SETTINGS = load_settings(
    {
        "REPLICATOR_SOURCE": "src1.azurecr.io",
        "REPLICATOR_SOURCE_RESOURCE_ID": TOPIC,
        "REPLICATOR_TARGETS": "dr1.azurecr.io,dr2.azurecr.io",
        "REPLICATOR_EXCLUDE": "scratch/**",
    }
)
# From the Event Grid spec example (reference section 1), trimmed.
PUSH: dict[str, Any] = {
    "id": "c25fdb80-0000",
    "topic": TOPIC,
    "subject": "samples/nginx:latest",
    "eventType": "Microsoft.ContainerRegistry.ImagePushed",
    "eventTime": "2021-09-08T06:37:45.66Z",
    "data": {
        "id": "c25fdb80-0000",
        "timestamp": "2021-09-08T06:37:45.46Z",
        "action": "push",
        "location": "westus",
        "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 1153,
            "digest": DIGEST,
            "length": 1153,
            "repository": "samples/nginx",
            "tag": "latest",
        },
        "request": {"id": "9f8f", "host": "src1.azurecr.io", "method": "PUT"},
    },
}
DELETE: dict[str, Any] = {
    "id": "6fde",
    "topic": None,
    "eventType": None,  # CloudEvents delivery: the Python trigger leaves these empty
    "data": {
        "action": "delete",
        "target": {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": DIGEST,
            "repository": "samples/nginx",
        },
        "request": {"host": "src1.azurecr.io", "method": "DELETE"},
    },
}


def _parse(raw: dict[str, Any]) -> RegistryEvent:
    return parse_event(
        event_id=raw["id"],
        event_type=raw["eventType"],
        topic=raw["topic"],
        data=raw["data"],
        event_time=raw.get("eventTime"),
    )


def test_push_gives_one_job_per_target() -> None:
    decision = decide(_parse(PUSH), SETTINGS, now=NOW)
    assert decision.ignored is None and decision.delay_seconds == 0
    assert [j.target for j in decision.jobs] == ["dr1.azurecr.io", "dr2.azurecr.io"]
    job = decision.jobs[0]
    assert (job.action, job.repository, job.tag, job.digest) == (
        Action.PUSH,
        "samples/nginx",
        "latest",
        DIGEST,
    )
    assert job.pushed_at == datetime(2021, 9, 8, 6, 37, 45, 460000, tzinfo=UTC)
    assert job.event_id == "c25fdb80-0000"


def test_duplicate_events_make_the_same_job_ids() -> None:
    again = copy.deepcopy(PUSH)
    again["id"] = "another-replica"
    first = decide(_parse(PUSH), SETTINGS, now=NOW).jobs
    second = decide(_parse(again), SETTINGS, now=NOW).jobs
    assert [j.job_id for j in first] == [j.job_id for j in second]


def test_delete_under_cloud_events_derives_the_type() -> None:
    event = _parse(DELETE)
    assert event.kind == "ImageDeleted" and event.tag is None
    decision = decide(event, SETTINGS, now=NOW)
    assert all(j.action is Action.DELETE for j in decision.jobs)


def test_untagged_push_is_delayed() -> None:
    untagged = copy.deepcopy(PUSH)
    del untagged["data"]["target"]["tag"]
    decision = decide(_parse(untagged), SETTINGS, now=NOW)
    assert decision.delay_seconds == SETTINGS.untagged_delay_seconds > 0
    assert all(j.tag is None for j in decision.jobs)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda e: e["data"]["request"].__setitem__("host", "other.azurecr.io"),
            "not the configured",
        ),
        (
            lambda e: e.__setitem__("topic", TOPIC.replace("srcreg1", "srcreg2")),
            "not the configured",
        ),
        (
            lambda e: e["data"]["target"].__setitem__("repository", "scratch/tmp"),
            "REPLICATOR_EXCLUDE",
        ),
        (lambda e: e.__setitem__("eventType", "Microsoft.ContainerRegistry.ChartPushed"), "Helm"),
    ],
    ids=["other-host", "other-topic", "excluded", "legacy-chart"],
)
def test_ignored_with_reason(change: Any, reason: str) -> None:
    raw = copy.deepcopy(PUSH)
    change(raw)
    decision = decide(_parse(raw), SETTINGS, now=NOW)
    assert decision.jobs == () and reason in (decision.ignored or "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.__setitem__("data", "nope"), "not an object"),
        (lambda e: e["data"].pop("target"), "data.target"),
        (lambda e: e["data"]["target"].__setitem__("digest", "sha256:xyz"), "invalid digest"),
        (
            lambda e: e["data"]["target"].__setitem__("repository", "UPPER/case"),
            "invalid repository",
        ),
        (lambda e: e["data"]["target"].__setitem__("tag", 7), "not a string"),
        (lambda e: e.__setitem__("eventType", "Microsoft.Storage.BlobCreated"), "unsupported"),
        (lambda e: e["data"]["target"].__setitem__("pad", "x" * 70_000), "over"),
        (lambda e: e["data"].__setitem__("timestamp", "yesterday"), "ISO 8601"),
    ],
    ids=[
        "data-not-object",
        "no-target",
        "bad-digest",
        "bad-repo",
        "tag-type",
        "foreign-type",
        "oversize",
        "bad-time",
    ],
)
def test_malformed_is_rejected_with_reason(change: Any, message: str) -> None:
    raw = copy.deepcopy(PUSH)
    change(raw)
    with pytest.raises(InvalidEventError, match=message):
        _parse(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    event_type=st.one_of(
        st.none(),
        st.text(max_size=40),
        st.sampled_from(
            ["Microsoft.ContainerRegistry.ImagePushed", "Microsoft.ContainerRegistry.ImageDeleted"]
        ),
    ),
    topic=json_values,
    data=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "action": st.sampled_from(["push", "delete", "chart_push", "x"]),
                "target": st.dictionaries(
                    st.sampled_from(["repository", "digest", "tag", "mediaType"]),
                    json_values | st.just(DIGEST) | st.just("team/app"),
                ),
            },
            optional={
                "request": st.dictionaries(
                    st.just("host"), json_values | st.just("src1.azurecr.io")
                )
            },
        ),
    ),
)
def test_any_input_yields_a_decision_or_a_clean_rejection(
    event_type: Any, topic: Any, data: Any
) -> None:
    try:
        event = parse_event(event_id="x", event_type=event_type, topic=topic, data=data)
    except InvalidEventError:
        return
    decision = decide(event, SETTINGS, now=NOW)
    assert decision.ignored or decision.jobs
