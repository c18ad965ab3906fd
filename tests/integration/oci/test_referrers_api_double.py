"""The referrers API double (devstack.referrers_api) against distribution-spec v1.1.1.

Each test names the spec.md section it holds the double to. Requests are raw HTTP (httpx),
so what is checked is the wire, not what the replicator's client makes of it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.localstack import LocalStack
from devstack.referrers_api import ReferrersRegistry, referrers_registry
from replicator.adapters.oci.referrers import list_referrers
from replicator.adapters.oci.registries import Registries
from tests.doubles.htpasswd import start_basic_registry

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(http: httpx.Client, name: str, data: bytes) -> dict[str, Any]:
    started = http.post(f"/v2/{name}/blobs/uploads/")
    assert started.status_code == 202
    done = http.put(_with_digest(started, data), content=data)
    assert done.status_code == 201, done.text
    return {"digest": _digest(data), "size": len(data)}


def _with_digest(upload: httpx.Response, data: bytes) -> httpx.URL:
    """The upload's Location with ``digest=`` added to the query it already has."""
    return httpx.URL(upload.headers["Location"]).copy_merge_params({"digest": _digest(data)})


def _put(http: httpx.Client, name: str, body: dict[str, Any], tag: str = "") -> httpx.Response:
    content = json.dumps(body).encode()
    reference = tag or _digest(content)
    return http.put(
        f"/v2/{name}/manifests/{reference}",
        content=content,
        headers={"Content-Type": str(body["mediaType"])},
    )


def _image(http: httpx.Client, name: str) -> dict[str, Any]:
    """A small image manifest; its descriptor (as a subject names it)."""
    config = _blob(http, name, b"{}")
    layer = _blob(http, name, os.urandom(64))
    body = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": EMPTY, **config},
        "layers": [{"mediaType": "application/octet-stream", **layer}],
    }
    answer = _put(http, name, body, tag="v1")
    assert answer.status_code == 201
    content = json.dumps(body).encode()
    return {"mediaType": MANIFEST, "digest": _digest(content), "size": len(content)}


def _artifact(
    http: httpx.Client,
    name: str,
    subject: dict[str, Any],
    artifact_type: str | None = SBOM,
    config_type: str = EMPTY,
    annotations: dict[str, str] | None = None,
) -> tuple[dict[str, Any], httpx.Response]:
    """Push an artifact manifest with ``subject``: (its expected listing entry, the answer)."""
    config = _blob(http, name, b"{}")
    layer = _blob(http, name, os.urandom(32))
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": config_type, **config},
        "layers": [{"mediaType": "application/octet-stream", **layer}],
        "subject": subject,
    }
    if artifact_type is not None:
        body["artifactType"] = artifact_type
    if annotations is not None:
        body["annotations"] = annotations
    content = json.dumps(body).encode()
    entry: dict[str, Any] = {
        "mediaType": MANIFEST,
        "digest": _digest(content),
        "size": len(content),
        "artifactType": artifact_type or config_type,
    }
    if annotations is not None:
        entry["annotations"] = annotations
    return entry, _put(http, name, body)


def _listing(http: httpx.Client, path: str) -> tuple[list[dict[str, Any]], list[httpx.Response]]:
    """Every descriptor, following ``Link: rel="next"``; and each page's answer."""
    pages: list[httpx.Response] = []
    found: list[dict[str, Any]] = []
    next_path: str | None = path
    while next_path is not None:
        page = http.get(next_path)
        assert page.status_code == 200, page.text
        pages.append(page)
        found += page.json()["manifests"]
        next_path = page.links.get("next", {}).get("url")
        assert len(pages) < 50
    return found, pages


@pytest.fixture
def http(api_registry: ReferrersRegistry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_registry.url, trust_env=False) as client:
        yield client


def test_listing_is_an_index_of_descriptors_with_artifact_type_and_annotations(
    http: httpx.Client,
) -> None:
    """ "Listing Referrers": an OCI index; artifactType from the manifest, else its config's
    mediaType; the manifest's annotations; an index without artifactType has none."""
    subject = _image(http, "team/app")
    sbom, _ = _artifact(http, "team/app", subject, annotations={"org.example.format": "json"})
    untyped, _ = _artifact(http, "team/app", subject, artifact_type=None, config_type=SIGNATURE)
    index_body = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [], "subject": subject}
    assert _put(http, "team/app", index_body).status_code == 201
    content = json.dumps(index_body).encode()
    index_entry = {"mediaType": INDEX, "digest": _digest(content), "size": len(content)}

    found, pages = _listing(http, f"/v2/team/app/referrers/{subject['digest']}")

    for answer in pages:
        assert answer.headers["Content-Type"] == INDEX
        assert "OCI-Filters-Applied" not in answer.headers
        body = answer.json()
        assert body["schemaVersion"] == 2 and body["mediaType"] == INDEX
    expected = sorted([sbom, untyped, index_entry], key=lambda d: d["digest"])
    assert sorted(found, key=lambda d: d["digest"]) == expected


def test_no_referrers_is_an_empty_list_never_a_404(http: httpx.Client) -> None:
    """ "Listing Referrers": a registry with the API MUST NOT answer 404; no match is an
    empty list (an unknown subject, an unknown repository alike)."""
    subject = _image(http, "team/app")
    unknown = _digest(b"never pushed")
    for path in (
        f"/v2/team/app/referrers/{subject['digest']}",
        f"/v2/team/app/referrers/{unknown}",
        f"/v2/nobody/here/referrers/{unknown}",
    ):
        answer = http.get(path)
        assert answer.status_code == 200, path
        assert answer.json()["manifests"] == []


@pytest.mark.parametrize(
    "path",
    ["/v2/team/app/referrers/sha256", "/v2/team/app/referrers/not-a-digest", "/v2/Team/referrers/"],
    ids=["no-encoded", "no-algorithm", "bad-name-and-empty"],
)
def test_malformed_request_is_a_400(http: httpx.Client, path: str) -> None:
    """ "Listing Referrers": an invalid <digest> is a 400 Bad Request."""
    answer = http.get(path)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["code"] in {"DIGEST_INVALID", "NAME_INVALID"}


def test_artifact_type_filter_is_applied_and_said_so(http: httpx.Client) -> None:
    """ "Listing Referrers": ``?artifactType=`` filters, with ``OCI-Filters-Applied``."""
    subject = _image(http, "team/app")
    sbom, _ = _artifact(http, "team/app", subject, artifact_type=SBOM)
    _artifact(http, "team/app", subject, artifact_type=SIGNATURE)

    answer = http.get(f"/v2/team/app/referrers/{subject['digest']}", params={"artifactType": SBOM})

    assert answer.headers["OCI-Filters-Applied"] == "artifactType"
    assert answer.json()["manifests"] == [sbom]


def test_a_long_list_comes_in_pages_linked_by_link(http: httpx.Client) -> None:
    """ "Listing Referrers": a Link header (RFC 5988, rel="next") when the list does not fit
    one answer; each page has other descriptors. The fixture's pages hold two."""
    subject = _image(http, "team/app")
    entries = [_artifact(http, "team/app", subject)[0] for _ in range(5)]
    _artifact(http, "team/app", subject, artifact_type=SIGNATURE)

    found, pages = _listing(http, f"/v2/team/app/referrers/{subject['digest']}?artifactType={SBOM}")

    assert [len(p.json()["manifests"]) for p in pages] == [2, 2, 1]
    assert all(p.headers["OCI-Filters-Applied"] == "artifactType" for p in pages)
    assert sorted(d["digest"] for d in found) == sorted(d["digest"] for d in entries)
    assert "Link" not in pages[-1].headers


def test_put_with_subject_answers_oci_subject(http: httpx.Client) -> None:
    """ "Pushing Manifests with Subject": OCI-Subject: <subject digest>; none without one."""
    subject = _image(http, "team/app")
    _, answer = _artifact(http, "team/app", subject)
    assert answer.status_code == 201
    assert answer.headers["OCI-Subject"] == subject["digest"]
    plain = _image(http, "team/other")
    assert "OCI-Subject" not in http.head(f"/v2/team/other/manifests/{plain['digest']}").headers


def test_referrer_before_its_subject_is_accepted_and_listed(http: httpx.Client) -> None:
    """ "Push": a manifest whose subject does not exist yet is accepted (either order)."""
    absent = {"mediaType": MANIFEST, "digest": _digest(b"later"), "size": 5}
    entry, answer = _artifact(http, "team/app", absent)
    assert answer.status_code == 201 and answer.headers["OCI-Subject"] == absent["digest"]
    assert http.get(f"/v2/team/app/referrers/{absent['digest']}").json()["manifests"] == [entry]


def test_referrers_are_per_repository(http: httpx.Client) -> None:
    """ "Listing Referrers": descriptors of manifests in the same <name> namespace."""
    subject = _image(http, "team/app")
    _artifact(http, "team/app", subject)
    listed = http.get(f"/v2/team/copy/referrers/{subject['digest']}").json()
    assert listed["manifests"] == []


def test_a_deleted_manifest_leaves_the_list(http: httpx.Client) -> None:
    """ "Deleting Manifests": once deleted, the referrer is no longer listed."""
    subject = _image(http, "team/app")
    kept, _ = _artifact(http, "team/app", subject)
    gone, _ = _artifact(http, "team/app", subject)
    assert http.delete(f"/v2/team/app/manifests/{gone['digest']}").status_code == 202
    assert http.get(f"/v2/team/app/referrers/{subject['digest']}").json()["manifests"] == [kept]


def test_an_oversized_manifest_is_refused_with_413(stack: LocalStack) -> None:
    """ "Pushing Manifests": over the registry's limit, 413 Payload Too Large."""
    with (
        referrers_registry(stack) as running,
        httpx.Client(base_url=running.url, trust_env=False) as http,
    ):
        running.api.max_manifest_bytes = 1024
        body = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [], "pad": "x" * 2048}
        answer = _put(http, "team/app", body)
        assert answer.status_code == 413
        assert all("/manifests/" not in line for line in _backend_log(running))


def test_everything_else_passes_through_unchanged(
    http: httpx.Client, api_registry: ReferrersRegistry
) -> None:
    """Blobs (a chunked PATCH upload), HEAD headers, tag lists and Location reach the
    client as the registry answered them."""
    started = http.post("/v2/team/app/blobs/uploads/")
    assert started.headers["Location"].startswith(("/v2/", api_registry.url))
    data = os.urandom(600_000)
    chunks = iter([data[:300_000], data[300_000:]])
    patched = http.patch(started.headers["Location"], content=chunks)
    assert patched.status_code == 202
    done = http.put(_with_digest(patched, data))
    assert done.status_code == 201
    pulled = http.get(f"/v2/team/app/blobs/{_digest(data)}")
    assert pulled.content == data
    head = http.head(f"/v2/team/app/blobs/{_digest(data)}")
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == _digest(data)
    subject = _image(http, "team/app")
    assert http.get("/v2/team/app/tags/list").json() == {"name": "team/app", "tags": ["v1"]}
    assert api_registry.backend is not None
    direct = httpx.get(
        f"{api_registry.backend.url}/v2/team/app/manifests/v1", headers={"Accept": MANIFEST}
    )
    through = http.get("/v2/team/app/manifests/v1", headers={"Accept": MANIFEST})
    assert through.content == direct.content and _digest(through.content) == subject["digest"]


def test_a_registry_that_does_not_answer_is_a_502(stack: LocalStack) -> None:
    """The layer is a gateway: the registry gone, it answers 502 with an error body."""
    with referrers_registry(stack) as running:
        assert running.backend is not None
        running.backend.stop()
        answer = httpx.get(f"{running.url}/v2/", trust_env=False)
        assert answer.status_code == 502
        assert answer.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_the_replicator_client_learns_the_api_and_writes_no_fallback_tag(
    api_registry: ReferrersRegistry, registries: Registries
) -> None:
    """With the API, a referrer push gets OCI-Subject, so no referrers tag is written."""
    from devstack.testimages import push_test_image
    from replicator.domain.reference import ImageRef

    pushed = push_test_image(registries, ImageRef(api_registry.host, "team/app", "v1"))
    client = registries.client(api_registry.host)
    found = list_referrers(registries, client, "team/app", pushed.digest)
    assert registries.referrers_api[api_registry.host] is True
    assert len(found.descriptors) == 1
    assert [tag for _, tag in api_registry.api.tags_written] == ["v1"]


def test_listing_needs_the_registry_s_authorization(stack: LocalStack, tmp_path: Path) -> None:
    """The registry decides who may list: its 401 and challenge are relayed."""
    backend = start_basic_registry(stack, tmp_path, "alice", "s3cret")
    backend.stop()
    config = {"auth": {"htpasswd": {"realm": "test", "path": str(tmp_path / "htpasswd")}}}
    with referrers_registry(stack, config=config) as running:
        digest = _digest(b"x")
        path = f"{running.url}/v2/team/app/referrers/{digest}"
        refused = httpx.get(path, trust_env=False)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        allowed = httpx.get(path, auth=("alice", "s3cret"), trust_env=False)
        assert allowed.status_code == 200 and allowed.json()["manifests"] == []


def _backend_log(running: ReferrersRegistry) -> list[str]:
    assert running.backend is not None
    return running.backend.access_log.read_text(errors="replace").splitlines()
