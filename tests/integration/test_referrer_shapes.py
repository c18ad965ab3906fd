"""Referrers across the four registry shape pairs, end to end on real registries.

A registry either has the OCI 1.1 referrers API (ACR; here ``devstack.referrers_api`` in
front of a distribution registry) or keeps referrers under the referrers tag schema
(``sha256-<hex>``, distribution 2.8 as it is). Pairs: API -> API (ACR to ACR, the main
case), fallback -> fallback, API -> fallback, fallback -> API. Through each: push events ->
queue -> worker, including Event Grid's disorder (a referrer's job before its subject's,
a subject's job before its late referrer exists, a referrer event with and without a tag),
a referrer whose event was lost (reconcile), and ``sync`` then ``diff``. Every pair ends
with DR listing what the source lists, in DR's own way; no ``sha256-`` tag is ever
written into a registry with the API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from devstack.demo import push_event
from devstack.localstack import Azurite, LocalStack, Registry
from devstack.localworker import deliver_push, drain, worker_runtime
from devstack.referrers_api import (
    SHAPE_IDS,
    SHAPE_PAIRS,
    ReferrersRegistry,
    shaped_pair,
    start_referrers_registry,
)
from devstack.testimages import SIGNATURE_TYPE, push_referrer, push_test_image
from replicator.adapters.oci.referrers import fallback_tag, list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.app.reconcile import run_reconcile
from replicator.cli import main
from replicator.domain.manifests import OCI_MANIFEST, Manifest
from replicator.domain.model import utcnow
from replicator.domain.planning import is_referrers_tag
from replicator.domain.reference import ImageRef
from replicator.functions import triggers

pytestmark = pytest.mark.integration
REPO = "team/app"


@pytest.fixture(params=SHAPE_PAIRS, ids=SHAPE_IDS)
def pair(request: pytest.FixtureRequest, stack: LocalStack) -> Iterator[tuple[Registry, Registry]]:
    """(source, target) of the shapes the parameter names; stopped after the test."""
    with shaped_pair(stack, *request.param) as started:
        yield started


def listed(registries: Registries, host: str, subject: str) -> set[str]:
    """The referrers of ``REPO@subject`` as ``host`` lists them (its API, else its tag)."""
    found = list_referrers(registries, registries.client(host), REPO, subject)
    return set(found.digests)


def tags(registry: Registry) -> list[str]:
    """The tags the registry itself holds (behind the layer, for one with the API)."""
    behind = registry.backend if isinstance(registry, ReferrersRegistry) else registry
    assert behind is not None
    answer = httpx.get(f"{behind.url}/v2/{REPO}/tags/list", trust_env=False)
    return list(answer.json().get("tags") or []) if answer.status_code == 200 else []


def assert_shapes_kept(source: Registry, target: Registry, subjects: list[str]) -> None:
    """No referrers tag in a registry with the API; one per subject in a fallback DR."""
    for registry in (source, target):
        if isinstance(registry, ReferrersRegistry):
            assert not [t for t in tags(registry) if is_referrers_tag(t)]
            assert not [t for _, t in registry.api.tags_written if is_referrers_tag(t)]
    if not isinstance(target, ReferrersRegistry):
        assert {fallback_tag(s) for s in subjects} <= set(tags(target))


def assert_complete(
    registries: Registries, source: Registry, target: Registry, subjects: list[str]
) -> None:
    for subject in subjects:
        want = listed(registries, source.host, subject)
        assert want, f"the source lists no referrers of {subject}"
        assert listed(registries, target.host, subject) == want, subject
    has_api = isinstance(target, ReferrersRegistry)
    assert registries.referrers_api[target.host] is has_api  # listed by DR's API, or its tags


def referrer_event(
    registries: Registries, source: Registry, subject: str, tag: str | None = None
) -> str:
    """Push a signature of ``subject`` (tagged ``tag`` too, when given) and raise the
    events a registry of the source's kind raises: the referrer's, and on a registry
    without the API the referrers tag's. Returns the signature's digest."""
    client = registries.client(source.host)
    manifest = client.get_manifest(ImageRef(source.host, REPO, digest=subject))
    ref = ImageRef(source.host, REPO, "x")
    digest = push_referrer(registries, ref, manifest, SIGNATURE_TYPE)
    pushed = client.get_manifest(ImageRef(source.host, REPO, digest=digest))
    if tag is not None:
        client.put_manifest(ImageRef(source.host, REPO, tag), pushed)
    when = utcnow()
    triggers.on_registry_event(
        push_event(
            ImageRef(source.host, REPO, tag), digest, OCI_MANIFEST, len(pushed.content), when
        )
    )
    if not isinstance(source, ReferrersRegistry):
        index_ref = ImageRef(source.host, REPO, fallback_tag(subject))
        index = client.head_manifest(index_ref)
        assert index is not None
        deliver_push(index_ref, index.digest)
    return digest


def test_events_in_any_order_end_with_dr_complete(
    pair: tuple[Registry, Registry], fresh_azurite: Azurite, registries: Registries
) -> None:
    source, target = pair
    with worker_runtime(source, target, fresh_azurite) as (runtime, _):
        # v1: a signature and an SBOM attached before the push
        v1 = push_test_image(registries, ImageRef(source.host, REPO, "v1"))
        # v2: its signature's job runs before its own (the subject is not in DR yet)
        v2 = push_test_image(registries, ImageRef(source.host, REPO, "v2"), referrers=False)
        early = referrer_event(registries, source, v2.digest)
        drain(runtime)
        assert early in listed(registries, target.host, v2.digest)
        deliver_push(ImageRef(source.host, REPO, "v1"), v1.digest)
        deliver_push(ImageRef(source.host, REPO, "v2"), v2.digest)
        drain(runtime)
        # late referrers of v1, after its job ran: one pushed by digest, one with a tag
        late = referrer_event(registries, source, v1.digest)
        tagged = referrer_event(registries, source, v1.manifests[0], tag="sig-late")
        drain(runtime)

        subjects = [v1.digest, v1.manifests[0], v2.digest]
        assert {late} <= listed(registries, target.host, v1.digest)
        assert {tagged} <= listed(registries, target.host, v1.manifests[0])
        assert "sig-late" in tags(target)
        assert_complete(registries, source, target, subjects)
        assert_shapes_kept(source, target, subjects)
        settled = run_reconcile(runtime, sleep=lambda _: None)
        assert settled.enqueued == 0, [j.job_id for j in settled.jobs]


def test_a_lost_event_is_closed_by_reconcile_and_then_nothing_is_enqueued(
    pair: tuple[Registry, Registry], fresh_azurite: Azurite, registries: Registries
) -> None:
    source, target = pair
    with worker_runtime(source, target, fresh_azurite) as (runtime, _):
        v1 = push_test_image(registries, ImageRef(source.host, REPO, "v1"))
        deliver_push(ImageRef(source.host, REPO, "v1"), v1.digest)
        drain(runtime)
        client = registries.client(source.host)
        index = client.get_manifest(ImageRef(source.host, REPO, digest=v1.digest))
        lost = push_referrer(registries, ImageRef(source.host, REPO, "v1"), index)

        first = run_reconcile(runtime, sleep=lambda _: None)
        assert first.enqueued >= 1
        drain(runtime)
        again = run_reconcile(runtime, sleep=lambda _: None)

        assert again.enqueued == 0, [j.job_id for j in again.jobs]
        assert lost in listed(registries, target.host, v1.digest)
        assert_complete(registries, source, target, [v1.digest, v1.manifests[0]])
        assert_shapes_kept(source, target, [v1.digest, v1.manifests[0]])


def test_sync_copies_referrers_and_diff_is_then_in_step(
    pair: tuple[Registry, Registry], registries: Registries, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = pair
    pushed = [push_test_image(registries, ImageRef(source.host, REPO, tag)) for tag in ("v1", "v2")]
    common = ["--source", source.host, "--target", target.host]

    assert main(["sync", *common, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {e["tag"] for e in report["copied"]} == {"v1", "v2"}  # no referrers tag of its own
    code = main(["diff", *common, "--json"])
    drift = json.loads(capsys.readouterr().out)
    assert (code, drift["missing"], drift["stale"], drift["extra"]) == (0, [], [], [])
    code = main(["diff", *common, "--referrers", "--json"])
    assert (code, json.loads(capsys.readouterr().out)["referrers_missing"]) == (0, [])

    subjects = [d for image in pushed for d in (image.digest, image.manifests[0])]
    assert_complete(registries, source, target, subjects)
    assert_shapes_kept(source, target, subjects)


@pytest.fixture
def to_fallback(stack: LocalStack) -> Iterator[tuple[Registry, Registry]]:
    """API -> fallback, the pair where DR keeps the referrers index itself."""
    started = [start_referrers_registry(stack, page_size=2), stack.start_registry()]
    yield started[0], started[1]
    for running in started:
        running.stop()


def test_a_referrer_in_dr_but_not_in_its_index_is_listed_by_reconcile(
    to_fallback: tuple[Registry, Registry], fresh_azurite: Azurite, registries: Registries
) -> None:
    """A referrer DR holds but its subject's referrers tag does not list (an index written
    before referrers copied on their own were listed, or a copy cut between the two PUTs):
    reconcile's job for it lists it, and the next pass has nothing to do."""
    source, target = to_fallback
    with worker_runtime(source, target, fresh_azurite) as (runtime, _):
        v1 = push_test_image(registries, ImageRef(source.host, REPO, "v1"))
        deliver_push(ImageRef(source.host, REPO, "v1"), v1.digest)
        drain(runtime)
        dst = registries.client(target.host)
        index = dst.get_manifest(ImageRef(target.host, REPO, fallback_tag(v1.digest)))
        emptied = {"schemaVersion": 2, "mediaType": index.media_type, "manifests": []}
        dst.put_manifest(
            ImageRef(target.host, REPO, fallback_tag(v1.digest)),
            Manifest.from_bytes(json.dumps(emptied).encode(), index.media_type),
        )
        assert not listed(registries, target.host, v1.digest)

        first = run_reconcile(runtime, sleep=lambda _: None)
        assert first.enqueued == 1
        drain(runtime)
        again = run_reconcile(runtime, sleep=lambda _: None)

        assert again.enqueued == 0, [j.job_id for j in again.jobs]
        assert_complete(registries, source, target, [v1.digest, v1.manifests[0]])
