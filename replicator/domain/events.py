"""Event Grid payload -> jobs. Pure: values in, values out.

ACR raises ``ImagePushed``/``ImageDeleted`` (and the legacy ``ChartPushed``/``ChartDeleted``);
see reference section 1. A tag is optional (pushes by digest, children of an index) and
delete events carry a digest only. Under a CloudEvents delivery the Python trigger leaves
``event_type`` and ``topic`` empty, so the type is derived from ``data.action``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from replicator.domain.config import Settings
from replicator.domain.errors import InvalidEventError, InvalidJobError, InvalidReferenceError
from replicator.domain.filters import Filters
from replicator.domain.model import Action, CopyJob, parse_time
from replicator.domain.reference import parse_digest, parse_registry, parse_repository, parse_tag

EVENT_PREFIX = "Microsoft.ContainerRegistry."
IMAGE_TYPES = {"ImagePushed": Action.PUSH, "ImageDeleted": Action.DELETE}
CHART_TYPES = {"ChartPushed", "ChartDeleted"}
ACTIONS = {"push": "ImagePushed", "delete": "ImageDeleted"}
CHART_ACTIONS = {"chart_push": "ChartPushed", "chart_delete": "ChartDeleted"}
MAX_EVENT_BYTES = 64 * 1024


@dataclass(frozen=True)
class RegistryEvent:
    event_id: str
    kind: str  # ImagePushed | ImageDeleted | ChartPushed | ChartDeleted
    registry: str | None  # request.host: the login server that took the request
    topic: str | None  # ARM id of the registry (Event Grid schema only)
    repository: str
    digest: str
    tag: str | None
    media_type: str | None
    timestamp: datetime | None

    @property
    def action(self) -> Action:
        return Action.DELETE if self.kind.endswith("Deleted") else Action.PUSH


@dataclass(frozen=True)
class EventDecision:
    """Jobs to enqueue (with a delay), or the reason the event was ignored."""

    jobs: tuple[CopyJob, ...] = ()
    ignored: str | None = None
    delay_seconds: int = 0


def _str(data: Mapping[str, object], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise InvalidEventError(f"event has no {key}")
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"event field {key} is not a string")
    return value


def _kind(event_type: object, data: Mapping[str, object]) -> str:
    if isinstance(event_type, str) and event_type.startswith(EVENT_PREFIX):
        kind = event_type.removeprefix(EVENT_PREFIX)
        if kind in IMAGE_TYPES or kind in CHART_TYPES:
            return kind
        raise InvalidEventError(f"unsupported event type {event_type[:100]!r}")
    if event_type not in (None, ""):
        raise InvalidEventError(f"unsupported event type {str(event_type)[:100]!r}")
    action = str(data.get("action"))
    derived = ACTIONS.get(action) or CHART_ACTIONS.get(action)
    if derived is None:
        raise InvalidEventError(f"no event type and unknown data.action {action[:40]!r}")
    return derived


def parse_event(
    *, event_id: object, event_type: object, topic: object, data: object, event_time: object = None
) -> RegistryEvent:
    """Validate one event; anything malformed is an ``InvalidEventError`` with the reason."""
    if not isinstance(data, Mapping):
        raise InvalidEventError("event data is not an object")
    try:
        size = len(json.dumps(data, default=str))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidEventError(f"event data cannot be serialised: {exc}") from exc
    if size > MAX_EVENT_BYTES:
        raise InvalidEventError(f"event data is {size} bytes, over {MAX_EVENT_BYTES}")
    target = data.get("target")
    if not isinstance(target, Mapping):
        raise InvalidEventError("event has no data.target object")
    raw_request = data.get("request")
    request: Mapping[str, object] = raw_request if isinstance(raw_request, Mapping) else {}
    kind = _kind(event_type, data)
    try:
        host = _str(request, "host", required=False)
        tag = _str(target, "tag", required=False)
        event = RegistryEvent(
            event_id=str(event_id or "")[:200] or "unknown",
            kind=kind,
            registry=parse_registry(host) if host else None,
            topic=topic if isinstance(topic, str) and topic else None,
            repository=parse_repository(str(_str(target, "repository"))),
            digest=parse_digest(str(_str(target, "digest"))),
            tag=None if tag is None or kind in CHART_TYPES else parse_tag(tag),
            media_type=_str(target, "mediaType", required=False),
            timestamp=_time(data.get("timestamp")) or _time(event_time),
        )
    except InvalidReferenceError as exc:
        raise InvalidEventError(str(exc)) from exc
    return event


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return parse_time(value, "timestamp") if isinstance(value, str) else None
    except InvalidJobError as exc:
        raise InvalidEventError(str(exc)) from exc


def _from_source(event: RegistryEvent, settings: Settings) -> str | None:
    if event.registry is not None and event.registry != settings.source:
        return f"event from {event.registry}, not the configured source {settings.source}"
    if (
        event.topic
        and settings.source_resource_id
        and event.topic.lower() != settings.source_resource_id.lower()
    ):
        return f"event from {event.topic}, not the configured source registry"
    return None


def decide(event: RegistryEvent, settings: Settings, *, now: datetime) -> EventDecision:
    """One job per target, or why the event is ignored."""
    if event.kind in CHART_TYPES:
        return EventDecision(ignored="legacy Helm chart events are not replicated (OCI charts are)")
    reason = _from_source(event, settings)
    if reason is None and event.action is Action.PUSH:
        reason = Filters(settings.include, settings.exclude).reason(event.repository, event.tag)
    if reason is None and event.action is Action.DELETE:
        reason = Filters(settings.include, settings.exclude).reason(event.repository, None)
    if reason:
        return EventDecision(ignored=reason)
    # Untagged pushes (an index's children, pushes by digest) wait: the index's own job
    # usually brings them first, and the late job then costs one HEAD.
    delay = (
        settings.untagged_delay_seconds if event.tag is None and event.action is Action.PUSH else 0
    )
    jobs = tuple(
        CopyJob(
            action=event.action,
            source=settings.source,
            target=target.login_server,
            repository=event.repository,
            digest=event.digest,
            tag=event.tag,
            media_type=event.media_type,
            event_id=event.event_id,
            pushed_at=event.timestamp or now,
        )
        for target in settings.targets
    )
    return EventDecision(jobs=jobs, delay_seconds=delay)
