"""Drift converges: an extra DR tag whose digest the source still holds under another tag.

Under ``propagate`` it is untagged, never deleted by digest (that would remove the
source-held tag too); a registry that refuses tag deletes (distribution 2.8: 400,
``DIGEST_INVALID`` from 2.8.2) keeps it, and the next reconcile reports it without
queueing it again.
Under ``keep`` it is reported, never queued. ACR's own tag delete is exercised against the
ACR listing double, built from the data-plane spec.
"""

from __future__ import annotations

import json

import azure.functions as func
import httpx
import pytest

from devstack.localstack import Registry
from devstack.localworker import LocalPair, drain
from devstack.testimages import manifest_digest, seed
from replicator.adapters.acr.tags import delete_tag
from replicator.adapters.oci.registries import Registries
from replicator.app.reconcile import run_reconcile
from replicator.domain.reference import ImageRef
from replicator.functions import triggers
from tests.doubles.acr_listing import AcrListingDouble, serve

pytestmark = pytest.mark.integration


def _seed_retagged(local: LocalPair) -> None:
    """The source moved ``app:old`` away (deleted the tag); its digest is still ``app:v1``."""
    local.seed([("app", "v1", 1)], [("app", "v1", 1), ("app", "old", 1)])


def test_propagate_untags_and_a_refusing_registry_is_not_requeued(local: LocalPair) -> None:
    target = local.target
    _seed_retagged(local)
    env = {"REPLICATOR_DELETE_POLICY": "propagate"}
    with local.worker(**env) as (runtime, _):
        first = run_reconcile(runtime, sleep=lambda _s: None)
        assert first.drift() == {target.host: {"missing": 0, "stale": 0, "extra": 1}}
        (job,) = first.jobs
        assert (job.action.value, job.tag, job.digest) == ("delete", "old", manifest_digest(1))
        stats = drain(runtime)
        assert stats.succeeded == 1 and stats.poisoned == 0
        (row,) = runtime.status.images("app", "old")
        assert row["outcome"] == "delete_skipped" and row["strategy"] == "untag"
        assert "refuses tag deletes (HTTP 400" in str(row["lastError"])  # 2.8.2: DIGEST_INVALID
        dst = runtime.registries.client(target.host)
        kept = dst.head_manifest(ImageRef(target.host, "app", "v1"))
        assert kept is not None and kept.digest == manifest_digest(1)  # never deleted by digest
        assert runtime.status.untag_refused(target.host) is not None

        shown = triggers.status(func.HttpRequest("GET", "/api/status", body=b"", params={}))
        refused = json.loads(shown.get_body())["untagRefused"]
        assert list(refused) == [target.host] and "refuses tag deletes" in refused[target.host]

        second = run_reconcile(runtime, sleep=lambda _s: None)
        assert second.drift() == first.drift()  # still reported
        assert second.enqueued == 0 and second.jobs == ()


def test_keep_reports_the_extra_tag_and_queues_nothing(local: LocalPair) -> None:
    target = local.target
    _seed_retagged(local)
    with local.worker() as (runtime, _):
        for _ in range(2):
            report = run_reconcile(runtime, sleep=lambda _s: None)
            assert report.drift()[target.host]["extra"] == 1
            assert report.enqueued == 0
        assert runtime.queue.depth() == 0


def test_an_unchanged_pair_in_step_enqueues_nothing_twice(local: LocalPair) -> None:
    local.seed([("app", "v1", 1), ("app", "v2", 2)], [("app", "v1", 1), ("app", "v2", 2)])
    env = {"REPLICATOR_DELETE_POLICY": "propagate"}
    with local.worker(**env) as (runtime, _):
        for _ in range(2):
            assert run_reconcile(runtime, sleep=lambda _s: None).enqueued == 0


def test_acr_tag_delete_removes_the_tag_only() -> None:
    digest = "sha256:" + "1" * 64
    double = AcrListingDouble({"team/app": {digest: ["v1", "old"]}})
    with serve(double) as host, Registries() as registries:
        client = registries.client(host)
        done = delete_tag(client, host, "team/app", "old", acr=True)
        assert done.removed and done.api == "acr" and done.refused is None
        assert double.repositories["team/app"][digest] == ["v1"]  # the manifest stays
        again = delete_tag(client, host, "team/app", "old", acr=True)
        assert again.removed  # 404 "The tag was not found": already gone
    assert double.requests[-2:] == [
        "DELETE /acr/v1/team/app/_tags/old",
        "DELETE /acr/v1/team/app/_tags/old",
    ]


def test_oci_tag_delete_refusal_is_an_answer_not_an_error(
    registry: Registry, registries: Registries
) -> None:
    seed(registries, registry.host, [("app", "v1", 1), ("app", "old", 1)])
    done = delete_tag(registries.client(registry.host), registry.host, "app", "old")
    assert not done.removed and done.refused is not None and "400" in done.refused
    tags = httpx.get(f"{registry.url}/v2/app/tags/list").json()["tags"]
    assert sorted(tags) == ["old", "v1"]
