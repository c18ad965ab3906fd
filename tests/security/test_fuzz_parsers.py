"""Hostile input to every parser that takes outside input: nothing raises except the
project's own error types, nothing hangs (each example runs under a deadline far above
what a parse takes: a hang, not slowness, trips it). Derandomized: the same examples on
every run, so a failure here is reproducible, never flaky."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.adapters.oci.auth import Authenticator, parse_challenge
from replicator.adapters.oci.credentials import RegistryAuth
from replicator.adapters.oci.paging import UnreadListing, next_page
from replicator.adapters.oci.transport import RetryPolicy
from replicator.domain.errors import (
    InvalidEventError,
    InvalidJobError,
    InvalidReferenceError,
    PermanentRegistryError,
    RegistryError,
)
from replicator.domain.events import parse_event
from replicator.domain.manifests import Manifest, blob_descriptors, children_of
from replicator.domain.model import CopyJob
from replicator.domain.reference import ImageRef

FUZZ = settings(max_examples=400, deadline=timedelta(seconds=5), derandomize=True, database=None)
DIGEST = "sha256:" + "ab" * 32
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80)
JSONISH: st.SearchStrategy[Any] = st.recursive(
    SCALARS | st.just(DIGEST),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=30,
)


def _keyed(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the keys a parser looks for, holding anything."""
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=10), JSONISH, max_size=8)


EVENT_DATA = st.one_of(
    JSONISH,
    st.fixed_dictionaries(
        {
            "action": st.sampled_from(["push", "delete", "chart_push"]) | JSONISH,
            "target": _keyed(["repository", "digest", "tag", "mediaType"]) | JSONISH,
            "request": _keyed(["host"]) | JSONISH,
            "timestamp": JSONISH,
        }
    ),
)


@FUZZ
@given(
    event_type=st.sampled_from(
        ["Microsoft.ContainerRegistry.ImagePushed", "Microsoft.ContainerRegistry.ChartPushed"]
    )
    | JSONISH,
    topic=JSONISH,
    data=EVENT_DATA,
    event_time=JSONISH,
)
def test_events(event_type: object, topic: object, data: object, event_time: object) -> None:
    try:
        event = parse_event(
            event_id="x", event_type=event_type, topic=topic, data=data, event_time=event_time
        )
    except InvalidEventError:
        return
    ImageRef(event.registry or "a.io", event.repository, event.tag, event.digest)


JOB_KEYS = list(json.loads(CopyJob.from_dict({
    "version": 1, "action": "push", "source": "a.io", "target": "b.io",
    "repository": "r", "digest": DIGEST,
}).to_json()))  # fmt: skip


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        _keyed(JOB_KEYS).map(json.dumps),
        st.builds(lambda d: json.dumps({"version": 1, "action": "push", **d}), _keyed(JOB_KEYS)),
        st.integers(0, 5000).map(lambda n: "[" * n + "]" * n),  # nesting bombs
    )
)
def test_queue_messages(body: str | bytes) -> None:
    try:
        job = CopyJob.from_json(body)
    except InvalidJobError:
        return
    assert CopyJob.from_json(job.to_json()) == job


@FUZZ
@given(
    st.one_of(
        st.text(max_size=300),
        st.from_regex(r"\A[a-z0-9.:-]{1,30}/[a-z0-9/._-]{1,40}(:[A-Za-z0-9_.-]{1,20})?\Z"),
        st.builds(lambda t: f"reg.io/{t}", st.text(max_size=60)),
        st.builds(lambda t: f"reg.io/app@{t}", st.text(max_size=80)),
        st.from_regex(r"\A\[[0-9A-Fa-f:.%a-z]{0,45}\]?(:[0-9]{0,6})?/[a-z]{1,9}(:v1)?\Z"),
    )
)
def test_references(text: str) -> None:
    try:
        ref = ImageRef.parse(text)
    except InvalidReferenceError:
        return
    assert ImageRef.parse(str(ref)) == ref  # what is accepted round-trips


MANIFEST_BODY = st.one_of(
    JSONISH,
    st.fixed_dictionaries(
        {
            "schemaVersion": JSONISH,
            "mediaType": st.sampled_from(
                [
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v1+json",
                ]
            )
            | JSONISH,
            "manifests": JSONISH | st.lists(_keyed(["digest", "mediaType", "size"]), max_size=3),
            "config": JSONISH | _keyed(["digest", "size", "mediaType"]),
            "layers": JSONISH | st.lists(_keyed(["digest", "size", "urls"]), max_size=3),
            "subject": JSONISH | _keyed(["digest"]),
        }
    ),
)


@FUZZ
@given(
    st.one_of(st.binary(max_size=300), MANIFEST_BODY.map(lambda b: json.dumps(b).encode())),
    st.none() | st.text(max_size=60),
)
def test_manifests(content: bytes, content_type: str | None) -> None:
    try:
        manifest = Manifest.from_bytes(content, content_type)
        children_of(manifest)
        blob_descriptors(manifest)
        _ = manifest.subject
        manifest.descriptor()
    except PermanentRegistryError:
        return


@FUZZ
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda s, ps: f"{s} " + ",".join(f'{k}="{v}"' for k, v in ps),
            st.sampled_from(["Bearer", "Basic", "bearer", ""]) | st.text(max_size=8),
            st.lists(st.tuples(st.text(max_size=10), st.text(max_size=30)), max_size=5),
        ),
    )
)
def test_www_authenticate(header: str) -> None:
    scheme, params = parse_challenge(header)
    assert isinstance(scheme, str) and all(isinstance(v, str) for v in params.values())


def _jwt(claims: object) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{payload}.c2ln"


TOKEN_BODY = st.one_of(
    st.binary(max_size=200),
    JSONISH.map(lambda b: json.dumps(b).encode()),
    st.fixed_dictionaries(
        {
            "token": JSONISH | _keyed(["exp"]).map(_jwt) | st.text(max_size=40),
            "expires_in": JSONISH,
        }
    ).map(lambda b: json.dumps(b).encode()),
)


@FUZZ
@given(
    challenge=st.one_of(
        st.text(max_size=100),
        st.builds(
            lambda s: f'Bearer realm="http://token.test/t",service="{s}"', st.text(max_size=10)
        ),
    ),
    status=st.sampled_from([200, 200, 401, 404, 500]),
    body=TOKEN_BODY,
)
def test_token_service_answers(challenge: str, status: int, body: bytes) -> None:
    """Whatever the registry challenges with and the token service answers: a header, a
    refusal to retry, or a registry error."""
    transport = httpx.MockTransport(lambda _request: httpx.Response(status, content=body))
    with httpx.Client(transport=transport) as http:
        auth = Authenticator(
            "reg.test", RegistryAuth.basic("u", "p"), http, RetryPolicy(attempts=1)
        )
        try:
            unauthorized = httpx.Response(
                401,
                headers={"WWW-Authenticate": challenge},
                request=httpx.Request("GET", "https://reg.test/v2/r/manifests/v1"),
            )
        except (ValueError, TypeError):
            return  # not a header value httpx would ever receive
        try:
            if auth.challenged(unauthorized, ("repository:r:pull",), 0):
                assert isinstance(auth.headers(("repository:r:pull",)), dict)
        except RegistryError:
            return


@FUZZ
@given(
    st.one_of(
        st.text(max_size=120),
        st.builds(
            lambda u, r: f"<{u}>; rel={r}",
            st.text(max_size=60)
            | st.sampled_from(
                [
                    "@evil.test/x",
                    ".evil.test/v2/x",
                    "//evil.test/x",
                    "http://reg.test/v2/x",  # the same host, another scheme
                    "https://reg.test:8443/v2/x",  # another port
                    "https://[::1]/v2/x",
                    "https://reg.test/v2/_catalog?last=a",  # the one that is followed
                ]
            ),
            st.sampled_from(['"next"', "next", '"prev"']),
        ),
    ),
    st.sampled_from(["https://reg.test", "http://[::1]:5000"]),
)
def test_link_headers_never_leave_the_registry(link: str, home: str) -> None:
    """The next page is always a path on the registry's own origin: nothing that, on
    ``home``, would name another scheme, host or port (``@evil``, ``.evil``, ``//evil``)."""
    request = httpx.Request("GET", f"{home}/v2/_catalog?n=10")
    try:
        response = httpx.Response(200, headers={"Link": link}, request=request)
    except (ValueError, TypeError):
        return  # not a header value httpx would ever receive
    try:
        found = next_page(response, home, "the catalog")
    except UnreadListing:
        return  # a link that cannot be followed: the listing reports it as unread
    if found is not None:
        assert found.startswith("/") and not found.startswith("//"), found
        followed, origin = httpx.URL(home + found), httpx.URL(home)
        assert (followed.scheme, followed.host, followed.port) == (
            origin.scheme,
            origin.host,
            origin.port,
        )
