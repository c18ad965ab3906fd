"""The one retry layer (``replicator.adapters.oci.transport``): one budget per operation shared
by its
nested steps, ``Retry-After`` in both forms, the pacer, deferral; and error bodies read
bounded, once. Registries scripted with ``httpx.MockTransport``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from replicator.adapters.oci.blobs import BlobCopy, copy_blob
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import ERROR_BODY_BYTES, RetryPolicy, parse_retry_after
from replicator.domain.errors import DeferRequested, TransientRegistryError
from replicator.domain.reference import ImageRef

DIGEST = "sha256:" + "a" * 64
NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("-4", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Tue, 01 Dec 2026 10:02:00 GMT", 120.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
    ids=[
        "seconds",
        "spaces",
        "negative",
        "http-date",
        "literal-date",
        "past",
        "junk",
        "empty",
        "none",
    ],
)
def test_retry_after_in_both_forms(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW.timestamp()) == expected


def _failing(count: list[int], status: int = 503) -> Callable[[], str]:
    def call() -> str:
        count.append(1)
        raise TransientRegistryError("busy", status=status)

    return call


def test_nested_steps_draw_from_one_budget() -> None:
    """An inner retried step inside an outer retried attempt: attempts add up, never
    multiply (before: 6 per request x 6 per blob attempt = 36)."""
    slept: list[float] = []
    policy = RetryPolicy(attempts=5, sleep=slept.append)
    inner: list[int] = []

    def attempt() -> str:
        return policy.run("step", _failing(inner))

    with pytest.raises(TransientRegistryError):
        policy.run("operation", attempt)
    assert len(inner) == 5
    assert len(slept) == 4


def test_separate_operations_have_their_own_budget() -> None:
    policy = RetryPolicy(attempts=3, sleep=lambda _: None)
    for _ in range(2):
        calls: list[int] = []
        with pytest.raises(TransientRegistryError):
            policy.run("op", _failing(calls))
        assert len(calls) == 3


def test_the_time_budget_ends_the_retries() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(attempts=100, seconds=10.0, sleep=sleep, clock=lambda: now[0])
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        raise TransientRegistryError("slow down", status=429, retry_after=3.0)

    with pytest.raises(TransientRegistryError, match="slow down"):
        policy.run("op", call)
    assert len(calls) == 4  # waits at 3, 6, 9 s; the next would end past 10 s
    assert now[0] == 9.0


def test_a_wait_over_the_threshold_defers_without_sleeping() -> None:
    slept: list[float] = []
    policy = RetryPolicy(defer_after=30.0, sleep=slept.append)

    def call() -> str:
        raise TransientRegistryError("GET blob r: HTTP 429", status=429, retry_after=600.0)

    with pytest.raises(DeferRequested) as deferred:
        policy.run("op", call)
    assert deferred.value.delay_seconds == 600.0
    assert deferred.value.status == 429
    assert isinstance(deferred.value, TransientRegistryError)
    assert slept == []


def test_a_deferral_is_never_retried() -> None:
    calls: list[int] = []
    policy = RetryPolicy(sleep=lambda _: None)

    def call() -> str:
        calls.append(1)
        raise DeferRequested("wait", delay_seconds=120.0)

    with pytest.raises(DeferRequested):
        policy.run("op", call)
    assert calls == [1]


@dataclass
class RecordingPacer:
    wait: float = 0.0
    asked: list[tuple[str, str]] = field(default_factory=list)
    throttles: list[tuple[str, str, float | None]] = field(default_factory=list)

    def before(self, registry: str, bucket: str) -> float:
        self.asked.append((registry, bucket))
        return self.wait

    def throttled(self, registry: str, bucket: str, retry_after: float | None) -> None:
        self.throttles.append((registry, bucket, retry_after))


def test_the_pacer_is_asked_before_each_request_and_told_of_each_429() -> None:
    answers = iter([429, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, headers={"Retry-After": "2"} if status == 429 else {})

    pacer = RecordingPacer()
    slept: list[float] = []
    retry = RetryPolicy(pacer=pacer, sleep=slept.append)
    with Registries(transport=httpx.MockTransport(handler), retry=retry) as registries:
        assert registries.client("r.example").head_blob("a", DIGEST) == 0
    assert pacer.asked == [("r.example", "read"), ("r.example", "read")]
    assert pacer.throttles == [("r.example", "read", 2.0)]
    assert slept == [2.0]


def test_a_pacer_wait_over_the_threshold_defers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing is sent while the pacer says wait")

    pacer = RecordingPacer(wait=300.0)
    retry = RetryPolicy(pacer=pacer, defer_after=60.0)
    with (
        Registries(transport=httpx.MockTransport(handler), retry=retry) as registries,
        pytest.raises(DeferRequested) as deferred,
    ):
        registries.client("r.example").start_upload("a")
    assert deferred.value.delay_seconds == 300.0
    assert pacer.asked == [("r.example", "write")]


def test_a_blob_whose_source_always_fails_costs_one_budget() -> None:
    """The whole blob copy is one operation: its HEAD, upload start and GET retries and
    its whole-attempt retries share ``attempts`` (the old layers multiplied to 36 GETs)."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.host}")
        if request.url.host == "dst.example" and request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/b/blobs/uploads/u1"})
        return httpx.Response(503)

    retry = RetryPolicy(attempts=6, sleep=lambda _: None)
    with Registries(transport=httpx.MockTransport(handler), retry=retry) as registries:
        job = BlobCopy(
            registries.client("src.example"), "a", registries.client("dst.example"), "b", DIGEST
        )
        with pytest.raises(TransientRegistryError, match="HTTP 503"):
            copy_blob(registries, job)
    assert seen.count("GET src.example") == 6


class EndlessBody(httpx.SyncByteStream):
    """An error body of 64 MiB (as good as endless here); counts what the client pulled."""

    def __init__(self, pulled: list[int]) -> None:
        self.pulled = pulled

    def __iter__(self) -> Iterator[bytes]:
        prefix = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "x"}]}).encode()
        self.pulled.append(len(prefix))
        yield prefix
        for _ in range(1024):
            self.pulled.append(64 * 1024)
            yield b" " * (64 * 1024)


@pytest.mark.parametrize("method", ["HEAD", "GET", "PUT"])
def test_error_bodies_are_read_a_few_kib_at_most_on_each_attempt(method: str) -> None:
    pulled: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, stream=EndlessBody(pulled))

    retry = RetryPolicy(attempts=3, sleep=lambda _: None)
    with Registries(transport=httpx.MockTransport(handler), retry=retry) as registries:
        client = registries.client("r.example")
        calls: dict[str, Callable[[], object]] = {
            "HEAD": lambda: client.head_manifest(ImageRef("r.example", "a", "v1")),
            "GET": lambda: client.get_manifest(ImageRef("r.example", "a", "v1")),
            "PUT": lambda: client.push_blob("a", b"data", DIGEST),
        }
        with pytest.raises(TransientRegistryError, match="UNAVAILABLE") as failed:
            calls[method]()
    assert failed.value.status == 503
    attempts = 3
    assert sum(pulled) <= attempts * (ERROR_BODY_BYTES + 64 * 1024 + 100)


def test_an_error_body_is_read_once_for_its_codes() -> None:
    """The manifest PUT looks at the codes, then raises with them: one bounded read."""
    pulled: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, stream=EndlessBody(pulled))

    from replicator.domain.errors import PermanentRegistryError
    from replicator.domain.manifests import OCI_MANIFEST, Manifest

    manifest = Manifest.from_bytes(b'{"schemaVersion": 2}', OCI_MANIFEST)
    with (
        Registries(transport=httpx.MockTransport(handler)) as registries,
        pytest.raises(PermanentRegistryError, match="UNAVAILABLE"),
    ):
        registries.client("r.example").put_manifest(ImageRef("r.example", "a", "v1"), manifest)
    assert sum(pulled) <= ERROR_BODY_BYTES + 64 * 1024 + 100
