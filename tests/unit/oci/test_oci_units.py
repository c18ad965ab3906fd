"""Pure parts of the OCI engine: manifests, challenges, scopes, retries, credentials."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from replicator.adapters.oci.auth import parse_challenge
from replicator.adapters.oci.client import scopes_for
from replicator.adapters.oci.credentials import RegistryAuth
from replicator.adapters.oci.dockerconfig import docker_config_auth
from replicator.adapters.oci.referrers import fallback_tag
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy, error_for, retry_after
from replicator.domain import manifests as mt
from replicator.domain.errors import (
    DigestMismatchError,
    NotFoundError,
    PermanentRegistryError,
    TransientRegistryError,
)
from replicator.domain.manifests import Manifest, blob_descriptors, children_of
from replicator.domain.reference import ImageRef

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def _bytes(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        ({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}, None, mt.OCI_INDEX),
        ({"schemaVersion": 2, "manifests": []}, None, mt.OCI_INDEX),
        ({"schemaVersion": 2, "layers": []}, None, mt.OCI_MANIFEST),
        (
            {"schemaVersion": 2, "layers": []},
            mt.DOCKER_MANIFEST + "; charset=utf-8",
            mt.DOCKER_MANIFEST,
        ),
        ({"schemaVersion": 2, "mediaType": mt.DOCKER_LIST, "manifests": []}, None, mt.DOCKER_LIST),
    ],
    ids=["oci-index", "index-by-shape", "manifest-by-shape", "header", "docker-list"],
)
def test_media_type(body: dict[str, object], header: str | None, expected: str) -> None:
    assert Manifest.from_bytes(_bytes(body), header).media_type == expected


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        ({"schemaVersion": 1, "name": "x"}, None, "schema 1"),
        (
            {"schemaVersion": 2},
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "schema 1",
        ),
        ({"schemaVersion": 2, "mediaType": "application/x-unknown"}, None, "unsupported"),
    ],
    ids=["schema1-body", "schema1-header", "unknown"],
)
def test_unsupported_manifests_are_clear_permanent_errors(
    body: dict[str, object], header: str | None, message: str
) -> None:
    with pytest.raises(PermanentRegistryError, match=message):
        Manifest.from_bytes(_bytes(body), header)


def test_digest_verified_and_size_limited() -> None:
    data = _bytes({"schemaVersion": 2, "layers": []})
    with pytest.raises(DigestMismatchError):
        Manifest.from_bytes(data, expected=D1)
    assert Manifest.from_bytes(data, expected=mt.sha256_digest(data)).digest == mt.sha256_digest(
        data
    )
    with pytest.raises(PermanentRegistryError, match="limit"):
        Manifest.from_bytes(b" " * (mt.MAX_MANIFEST_BYTES + 1))


def test_children_and_blobs() -> None:
    index = Manifest.from_bytes(_bytes({"mediaType": mt.OCI_INDEX, "manifests": [{"digest": D1}]}))
    image = Manifest.from_bytes(
        _bytes(
            {
                "mediaType": mt.OCI_MANIFEST,
                "config": {"digest": D1, "size": 3},
                "layers": [
                    {"digest": D2, "size": 5},
                    {"digest": D2, "size": 5, "urls": ["http://x"]},
                ],
            }
        )
    )
    assert children_of(index) == [D1]
    assert blob_descriptors(image) == [(D1, 3), (D2, 5)]  # the foreign layer stays out
    bad = Manifest.from_bytes(
        _bytes({"mediaType": mt.OCI_INDEX, "manifests": [{"digest": "../x"}]})
    )
    with pytest.raises(PermanentRegistryError, match="invalid digest"):
        children_of(bad)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://r.io/oauth2/token",service="r.io",scope="repository:a/b:pull"',
            (
                "bearer",
                {
                    "realm": "https://r.io/oauth2/token",
                    "service": "r.io",
                    "scope": "repository:a/b:pull",
                },
            ),
        ),
        ('Basic realm="Registry Realm"', ("basic", {"realm": "Registry Realm"})),
        (
            'Bearer realm=https://x/token,error="insufficient_scope"',
            ("bearer", {"realm": "https://x/token", "error": "insufficient_scope"}),
        ),
    ],
    ids=["bearer", "basic", "unquoted"],
)
def test_parse_challenge(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_challenge(header) == expected


@pytest.mark.parametrize(
    ("method", "path", "extra", "expected"),
    [
        ("GET", "/v2/a/b/manifests/v1", (), ("repository:a/b:pull",)),
        ("PUT", "/v2/a/manifests/v1", (), ("repository:a:pull,push",)),
        ("DELETE", "/v2/a/manifests/" + D1, (), ("repository:a:delete",)),
        (
            "POST",
            "/v2/a/blobs/uploads/",
            ("repository:b:pull",),
            ("repository:a:pull,push", "repository:b:pull"),
        ),
        ("GET", "/v2/_catalog", (), ("registry:catalog:*",)),
        ("GET", "/v2/", (), ()),
    ],
    ids=["pull", "push", "delete", "mount", "catalog", "ping"],
)
def test_scopes(method: str, path: str, extra: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert scopes_for(method, path, extra) == expected


def test_backoff_is_bounded_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=3, base=1.0, cap=4.0)
    assert all(0 <= policy.delay(n, None) <= min(4.0, 2 ** (n - 1)) for n in range(1, 10))
    assert policy.delay(1, 7.0) == 7.0
    assert policy.delay(1, 10_000.0) == 10_000.0  # too long to sleep: deferred by run()
    assert RetryPolicy(defer_after=None).delay(1, 10_000.0) == 60.0
    slept: list[float] = []
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        raise TransientRegistryError("busy", status=503, retry_after=2.0)

    with pytest.raises(TransientRegistryError):
        RetryPolicy(attempts=3, sleep=slept.append).run("x", flaky)
    assert (len(calls), slept) == (3, [2.0, 2.0])


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, TransientRegistryError),
        (503, TransientRegistryError),
        (404, NotFoundError),
        (401, PermanentRegistryError),
        (400, PermanentRegistryError),
    ],
    ids=["429", "503", "404", "401", "400"],
)
def test_error_for_status(status: int, kind: type[Exception]) -> None:
    response = httpx.Response(
        status, json={"errors": [{"code": "CODE", "message": "m"}]}, headers={"Retry-After": "3"}
    )
    error = error_for(response, "GET blob", "r/x")
    assert type(error) is kind
    assert (error.status, error.operation, error.reference) == (status, "GET blob", "r/x")
    assert "CODE" in str(error)
    assert retry_after(response) == 3.0


def test_docker_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    encoded = base64.b64encode(b"user:pa:ss").decode()
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "https://a.io": {"auth": encoded},
                    "b.io": {"identitytoken": "refresh-1"},
                    "c.io": {"username": "u", "password": "p"},
                }
            }
        )
    )
    assert docker_config_auth("a.io", path) == RegistryAuth.basic("user", "pa:ss")
    assert docker_config_auth("b.io", path) == RegistryAuth.refresh_token("refresh-1")
    assert docker_config_auth("c.io", path) == RegistryAuth.basic("u", "p")
    assert docker_config_auth("d.io", path) is None
    assert docker_config_auth("a.io", tmp_path / "missing.json") is None


def test_fallback_tag() -> None:
    assert fallback_tag(D1) == "sha256-" + "a" * 64


def test_oversized_manifest_is_refused_before_reading() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Length": str(5 * 1024 * 1024), "Content-Type": mt.OCI_MANIFEST},
            content=b"{}",
        )

    with (
        Registries(transport=httpx.MockTransport(handler)) as registries,
        pytest.raises(PermanentRegistryError, match="limit"),
    ):
        registries.client("r.example").get_manifest(ImageRef("r.example", "a", "v1"))


def test_referrers_api_is_used_paged_and_its_absence_remembered() -> None:
    from replicator.adapters.oci.referrers import list_referrers

    seen: list[str] = []
    page = {
        "/v2/a/referrers/" + D1: (
            {"manifests": [{"digest": D2}]},
            '</v2/a/referrers/x?n=1>; rel="next"',
        ),
        "/v2/a/referrers/x": ({"manifests": [{"digest": D1}]}, ""),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.host} {request.url.path}")
        if request.url.host == "api.example" and request.url.path in page:
            body, link = page[request.url.path]
            return httpx.Response(
                200,
                json={"schemaVersion": 2, "mediaType": mt.OCI_INDEX, **body},
                headers={"Content-Type": mt.OCI_INDEX, "Link": link},
            )
        return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]})

    with Registries(transport=httpx.MockTransport(handler)) as registries:
        found = list_referrers(registries, registries.client("api.example"), "a", D1)
        assert found.digests == {D1, D2}
        assert registries.referrers_api["api.example"] is True
        old = registries.client("old.example")
        assert list_referrers(registries, old, "a", D1).descriptors == ()
        assert list_referrers(registries, old, "a", D2).descriptors == ()
        assert registries.referrers_api["old.example"] is False
    # the API asked once on the old registry, then only the fallback tag
    assert [s for s in seen if "old.example /v2/a/referrers" in s] == [
        "GET old.example /v2/a/referrers/" + D1
    ]
    assert "GET old.example /v2/a/manifests/sha256-" + "b" * 64 in seen


@pytest.mark.parametrize(
    ("answers", "puts", "outcome"),
    [
        ([400, 201], 2, None),  # blobs not seen at once: seen on the retry
        ([400] * 3, 3, TransientRegistryError),  # never seen: transient to the end
        ([429, 400, 201], 3, None),  # one retry loop serves both
    ],
)
def test_manifest_push_retries_blobs_the_target_does_not_see_yet(
    answers: list[int], puts: int, outcome: type[Exception] | None
) -> None:
    manifest = Manifest.from_bytes(
        json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}).encode(), mt.OCI_MANIFEST
    )
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        status = answers[min(len(seen), len(answers)) - 1]
        errors = [{"code": "DIGEST_INVALID"}, {"code": "MANIFEST_BLOB_UNKNOWN"}]
        return httpx.Response(status, json={"errors": errors} if status == 400 else None)

    retry = RetryPolicy(attempts=3, sleep=lambda _: None)
    ref = ImageRef("r.example", "a", digest=manifest.digest)
    with Registries(transport=httpx.MockTransport(handler), retry=retry) as registries:
        client = registries.client("r.example")
        if outcome is None:
            assert client.put_manifest(ref, manifest) == manifest.digest
        else:
            with pytest.raises(outcome, match="MANIFEST_BLOB_UNKNOWN"):
                client.put_manifest(ref, manifest)
    assert seen == [manifest.content] * puts


def test_other_manifest_refusals_are_not_retried() -> None:
    manifest = Manifest.from_bytes(b'{"schemaVersion": 2}', mt.OCI_MANIFEST)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(400, json={"errors": [{"code": "MANIFEST_INVALID"}]})

    with (
        Registries(transport=httpx.MockTransport(handler)) as registries,
        pytest.raises(PermanentRegistryError, match="MANIFEST_INVALID"),
    ):
        registries.client("r.example").put_manifest(ImageRef("r.example", "a", "v1"), manifest)
    assert seen == ["PUT"]
