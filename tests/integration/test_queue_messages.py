"""What goes out on the queue, as sent: the (visibility, time-to-live) pair and the size.

Azurite keeps a 7-day delay with the default 7-day TTL, so these tests look at the requests
themselves (a hook on the SDK's pipeline) and at the expiry Azurite reports back.
Put Message (Storage REST reference): ``visibilitytimeout`` 0..7 days and never later than
the expiry; ``messagettl`` -1 never expires; the *encoded* message is at most 64 KiB.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.transport import HttpRequest

from devstack.localstack import Azurite, Registry
from devstack.localworker import worker_runtime
from replicator.adapters.azure.queue import (
    MAX_MESSAGE_BYTES,
    MAX_VISIBILITY_SECONDS,
    NEVER_EXPIRES,
    NO_WAIT_RETRY,
    StorageJobQueue,
    encoded_size,
    poison_envelope,
)
from replicator.app import service
from replicator.domain.config import StorageConnection
from replicator.domain.errors import InvalidJobError
from replicator.domain.model import Action, CopyJob, Outcome, utcnow

DIGEST = "sha256:" + "ab" * 32


class Sent:
    """Records the query of every Put Message the SDK sends."""

    def __init__(self) -> None:
        self.puts: list[dict[str, str]] = []
        self.texts: list[str] = []

    def __call__(self, request: PipelineRequest[HttpRequest]) -> None:
        http = request.http_request
        if http.method == "POST" and urlsplit(http.url).path.endswith("/messages"):
            query = parse_qs(urlsplit(http.url).query)
            self.puts.append({k: v[0] for k, v in query.items()})
            body = http.body.decode() if isinstance(http.body, bytes) else str(http.body)
            encoded = re.search(r"<MessageText>([^<]*)</MessageText>", body)
            assert encoded is not None, body[:200]
            self.texts.append(base64.b64decode(encoded.group(1)).decode())

    def pairs(self) -> list[tuple[int, int]]:
        return [(int(p["visibilitytimeout"]), int(p["messagettl"])) for p in self.puts]


def _delete_job(source: str, target: str) -> CopyJob:
    return CopyJob(Action.DELETE, source, target, "team/app", DIGEST, tag="v1", origin="event")


@pytest.mark.parametrize("delay", ["7d", "30d"], ids=["seven-days", "thirty-days"])
def test_longest_delay_is_sent_with_a_ttl_that_outlives_it(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite, delay: str
) -> None:
    """propagate-after:7d and longer: the delete is sent visible in 7 days (Put Message's
    cap) and never expiring; arriving early, it is sent on again until it is due."""
    source, target = registry_pair
    env = {"REPLICATOR_DELETE_POLICY": f"propagate-after:{delay}"}
    with worker_runtime(source, target, fresh_azurite, **env) as (runtime, _):
        sent = Sent()
        runtime.queue = StorageJobQueue(
            runtime.queue.connection, retry=NO_WAIT_RETRY, request_hook=sent
        )
        first = service.replicate(runtime, _delete_job(source.host, target.host))
        assert first.outcome is Outcome.DEFERRED
        ((visibility, ttl),) = sent.pairs()
        assert MAX_VISIBILITY_SECONDS - 5 <= visibility <= MAX_VISIBILITY_SECONDS
        assert ttl == NEVER_EXPIRES
        early = CopyJob.from_json(sent.texts[-1])
        assert early.not_before is not None
        assert early.not_before - utcnow() > timedelta(days=6)
        again = service.replicate(runtime, early)  # delivered a week later, still early
        assert again.outcome is Outcome.DEFERRED
        visibility, ttl = sent.pairs()[-1]
        assert MAX_VISIBILITY_SECONDS - 5 <= visibility <= MAX_VISIBILITY_SECONDS
        assert ttl == NEVER_EXPIRES


def test_every_message_is_sent_never_expiring(fresh_azurite: Azurite) -> None:
    sent = Sent()
    queue = StorageJobQueue(
        StorageConnection(fresh_azurite.connection_string), retry=NO_WAIT_RETRY, request_hook=sent
    )
    queue.ensure()
    queue.send(_delete_job("127.0.0.1:5001", "127.0.0.1:5002"))
    queue.send_text("{}", delay_seconds=45)
    queue.send_poison("not json", "unreadable")
    assert sent.pairs() == [(0, NEVER_EXPIRES), (45, NEVER_EXPIRES), (0, NEVER_EXPIRES)]
    (message,) = queue.client().peek_messages()
    expires = message.expires_on  # Azurite reads the TTL back: never expires
    assert expires is not None and expires.year == 9999


def _text_of(raw_bytes: int) -> str:
    """A JSON text of exactly ``raw_bytes`` bytes."""
    return json.dumps({"pad": "x" * (raw_bytes - len(json.dumps({"pad": ""})))})


@pytest.mark.parametrize(
    ("raw_bytes", "accepted"),
    [(48 * 1024, True), (48 * 1024 + 1, False), (60 * 1024, False)],
    ids=["exactly-64KiB-encoded", "one-byte-over-encoded", "under-64KiB-raw-over-encoded"],
)
def test_size_limit_is_on_the_encoded_message(
    fresh_azurite: Azurite, raw_bytes: int, accepted: bool
) -> None:
    """48 KiB of JSON is exactly 64 KiB of base64, what the queue takes; one byte more is
    refused before anything is sent, as a permanent error (the queue would answer 413)."""
    sent = Sent()
    queue = StorageJobQueue(
        StorageConnection(fresh_azurite.connection_string), retry=NO_WAIT_RETRY, request_hook=sent
    )
    text = _text_of(raw_bytes)
    assert len(text.encode()) == raw_bytes
    assert (encoded_size(text) <= MAX_MESSAGE_BYTES) is accepted
    if accepted:
        queue.send_text(text)
        (message,) = queue.client().peek_messages()
        assert message.content == text
    else:
        with pytest.raises(InvalidJobError, match="as sent"):
            queue.send_text(text)
        assert sent.puts == []


def test_poison_envelope_fits_the_queue_whatever_the_body() -> None:
    body = '"' * 60_000  # doubles when JSON-escaped
    envelope = poison_envelope(body, "r" * 5000)
    assert encoded_size(envelope) <= MAX_MESSAGE_BYTES
    assert json.loads(envelope)["message"] == body[: len(json.loads(envelope)["message"])]


def test_a_delay_past_seven_days_becomes_the_jobs_due_time(fresh_azurite: Azurite) -> None:
    """Whoever asks for a longer delay, the job is not run early: the queue keeps it 7 days
    and the job carries the rest as ``not_before`` (the worker sends it on)."""
    sent = Sent()
    queue = StorageJobQueue(
        StorageConnection(fresh_azurite.connection_string), retry=NO_WAIT_RETRY, request_hook=sent
    )
    queue.ensure()
    job = _delete_job("127.0.0.1:5001", "127.0.0.1:5002")
    queue.send(job, delay_seconds=30 * 24 * 3600)
    assert sent.pairs() == [(MAX_VISIBILITY_SECONDS, NEVER_EXPIRES)]
    queued = CopyJob.from_json(sent.texts[0])
    assert queued.job_id == job.job_id and queued.not_before is not None
    assert timedelta(days=29) < queued.not_before - utcnow() <= timedelta(days=30)
