"""Resync within HTTP limits: POST /api/resync answers 202 with a plan id before any
registry request; ``run_plan`` (queue ``replication-plans``) lists, diffs and enqueues;
GET /api/status?plan=<id> follows it; a dry run's full plan is a blob."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from devstack.localrun import queue_message
from devstack.localruntime import local_runtime
from devstack.localstack import Azurite, Registry, free_port
from devstack.localworker import LocalPair, drain, plan_runner, worker_runtime
from devstack.testimages import manifest_digest
from replicator.adapters.azure.queue import NO_WAIT_RETRY
from replicator.app.plans import PlanRequest
from replicator.app.runtime import build_runtime
from replicator.domain.config import load_settings
from replicator.domain.reference import ImageRef
from replicator.functions import triggers

pytestmark = pytest.mark.integration


def _resync(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    answer = triggers.resync(
        func.HttpRequest("POST", "/api/resync", body=json.dumps(body).encode())
    )
    return answer.status_code, json.loads(answer.get_body())


def _plan(plan_id: str) -> tuple[int, dict[str, Any]]:
    answer = triggers.status(
        func.HttpRequest("GET", "/api/status", body=b"", params={"plan": plan_id})
    )
    return answer.status_code, json.loads(answer.get_body())


def test_whole_registry_resync_answers_at_once_with_unreachable_registries(
    fresh_azurite: Azurite,
) -> None:
    """Both registries are closed ports: a single registry request during the HTTP call
    would turn the answer into an error. The plan is recorded and queued, nothing else."""
    source, target = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": source,
            "REPLICATOR_TARGETS": target,
            "AzureWebJobsStorage": fresh_azurite.connection_string,
        },
        require_storage=True,
    )
    runtime = local_runtime(build_runtime(settings, storage_retry=NO_WAIT_RETRY))
    triggers.use_runtime(runtime)
    try:
        for body in ({}, {"repository": "team/app"}, {"dry_run": True, "target": target}):
            status, answer = _resync(body)
            assert status == 202, answer
            assert answer["state"] == "queued" and answer["status"].endswith(answer["plan"])
            code, row = _plan(answer["plan"])
            assert code == 200 and row["state"] == "queued"
            assert row["request"]["repository"] == body.get("repository")
        (message, *_) = runtime.plans.client().peek_messages(max_messages=32)
        assert PlanRequest.from_json(message.content).source == source
        assert runtime.plans.depth() == 3 and runtime.queue.depth() == 0
    finally:
        triggers.use_runtime(None)
        runtime.close()


def test_plan_lists_diffs_and_enqueues_and_status_shows_its_counts(local: LocalPair) -> None:
    target = local.target
    local.seed([("app", "v1", 1), ("app", "v2", 2), ("team/x", "v1", 3)], [("app", "v1", 1)])
    with local.worker() as (runtime, _):
        status, answer = _resync({})
        assert status == 202
        stats = plan_runner(runtime).run_until_idle(timeout=60)
        assert stats.succeeded == 1 and stats.poisoned == 0
        code, row = _plan(answer["plan"])
        assert code == 200 and row["state"] == "done"
        assert row["drift"] == {target.host: {"missing": 2, "stale": 0, "extra": 0}}
        assert (row["planned"], row["enqueued"], row["errorCount"]) == (2, 2, 0)
        assert drain(runtime).succeeded == 2
        dst = runtime.registries.client(target.host)
        copied = dst.head_manifest(ImageRef(target.host, "team/x", "v1"))
        assert copied is not None and copied.digest == manifest_digest(3)
        again = plan_runner(runtime)  # the same plan delivered twice: run once
        runtime.plans.send_text(PlanRequest.from_json(json.dumps(row["request"])).to_json())
        again.run_until_idle(timeout=60)
        assert _plan(answer["plan"])[1] == row  # not run again: the row is untouched


def test_dry_run_plan_goes_to_a_blob_linked_from_the_status(local: LocalPair) -> None:
    target = local.target
    local.seed([("app", f"v{i}", i) for i in range(5)], [("app", "v0", 0), ("app", "old", 9)])
    with local.worker() as (runtime, _):
        status, answer = _resync({"dry_run": True})
        assert status == 202 and answer["dry_run"] is True
        plan_runner(runtime).run_until_idle(timeout=60)
        _, row = _plan(answer["plan"])
        assert row["state"] == "done"
        assert row["blob"].endswith(f"/replication-plans/{answer['plan']}.json")
        stored = runtime.plan_blobs.get(answer["plan"])
        assert stored is not None
        document = json.loads(stored)
        plan = document["plans"][target.host]
        assert sorted(e["tag"] for e in plan["missing"]) == ["v1", "v2", "v3", "v4"]
        assert [e["tag"] for e in plan["extra"]] == ["old"]
        assert runtime.queue.depth() == 0  # a dry run enqueues nothing


def test_single_tag_resync_still_answers_at_once(local: LocalPair) -> None:
    target = local.target
    local.seed([("app", "v1", 1), ("app", "v2", 2)])
    with local.worker() as (runtime, _):
        status, answer = _resync({"repository": "app", "tag": "v2"})
        assert status == 202 and answer["enqueued"] == 1
        assert answer["jobs"][0]["digest"] == manifest_digest(2)
        assert runtime.plans.depth() == 0
        status, dry = _resync({"repository": "app", "tag": "v1", "dry_run": True})
        assert status == 200 and dry["plans"][target.host]["missing"][0]["tag"] == "v1"


def test_malformed_plan_message_is_poisoned_and_bad_plan_ids_refused(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> None:
    source, target = registry_pair
    with worker_runtime(source, target, fresh_azurite) as (runtime, _):
        triggers.run_plan(queue_message("p1", b'{"version": 1}'))
        (poisoned,) = runtime.plans.client(runtime.plans.poison_name).peek_messages()
        assert "plan_id" in json.loads(poisoned.content)["poison_reason"]
        assert _plan("not-a-plan")[0] == 400
        assert _plan("0" * 32)[0] == 404
        assert _resync({"tag": "v1"})[0] == 400  # a tag needs its repository
