"""Reconcile and the HTTP API logic against real registries and a real (Azurite) queue
and status table."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest

from devstack.localruntime import LocalRuntime
from devstack.localstack import Azurite, Registry
from devstack.testimages import manifest_digest, seed
from replicator.adapters.azure.claims import TableClaims
from replicator.adapters.azure.cursors import TableCursors
from replicator.adapters.azure.planblobs import PlanBlobs
from replicator.adapters.azure.queue import StorageJobQueue
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.referrer_lister import RegistryReferrers
from replicator.adapters.oci.registries import Registries
from replicator.app.api import handle_replay, handle_resync, handle_status
from replicator.app.reconcile import Pacing, run_reconcile
from replicator.domain.config import Settings, StorageConnection
from replicator.domain.model import CopyJob, JobResult, Outcome, Target

pytestmark = pytest.mark.integration

MISSING = {("app0", "v1"), ("app1", "v0"), ("team/app2", "v0")}
STALE = {("app3", "v0")}
EXTRA = {("app4", "old")}


@pytest.fixture
def runtime(registry_pair: tuple[Registry, Registry], azurite: Azurite) -> Iterator[LocalRuntime]:
    source, target = registry_pair
    repos = ["app0", "app1", "team/app2", "app3", "app4", "app5"]
    images = [(repo, f"v{k}", k) for repo in repos for k in range(2)]
    connection = StorageConnection(azurite.connection_string)
    unique = uuid.uuid4().hex[:10]
    settings = Settings(source=source.host, targets=(Target(target.host),), storage=connection)
    registries = Registries(plain_http=settings.uses_plain_http)
    seed(registries, source.host, images)
    kept = [(r, t, v + 5 if (r, t) in STALE else v) for r, t, v in images if (r, t) not in MISSING]
    seed(registries, target.host, [*kept, *((r, t, 9) for r, t in EXTRA)])
    built = LocalRuntime(
        settings=settings,
        registries=registries,
        queue=StorageJobQueue(connection, name=f"jobs{unique}"),
        status=(status := TableStatusStore(connection, name=f"status{unique}")),
        claims=TableClaims(status),
        plans=StorageJobQueue(connection, name=f"plans{unique}"),
        plan_blobs=PlanBlobs(connection, container=f"plans{unique}"),
        cursors=TableCursors(status),
        referrers=RegistryReferrers(registries),
    )
    built.queue.ensure()
    built.status.ensure()
    yield built
    built.close()


def drain(runtime: LocalRuntime) -> list[CopyJob]:
    client = runtime.queue.client()
    jobs = []
    while batch := list(client.receive_messages(max_messages=32, visibility_timeout=60)):
        for message in batch:
            jobs.append(CopyJob.from_json(str(message.content)))
            client.delete_message(message)
    return jobs


def test_reconcile_enqueues_missing_and_stale_paced_and_records_drift(
    runtime: LocalRuntime,
) -> None:
    slept: list[float] = []
    pacing = Pacing(batch=2, pause_seconds=0.25, jobs_per_minute=3)
    report = run_reconcile(runtime, pacing=pacing, sleep=slept.append)
    target = runtime.settings.targets[0].login_server
    assert report.drift() == {target: {"missing": 3, "stale": 1, "extra": 1}}
    assert report.enqueued == 4
    assert slept == [0.25]  # 4 jobs in batches of 2
    assert [pacing.delay_for(i) for i in range(4)] == [0, 0, 0, 60]
    assert runtime.queue.depth() == 4  # the last one is invisible for a minute, still counted
    jobs = drain(runtime)
    assert {(j.repository, j.tag) for j in jobs} == MISSING  # the stale one is not visible yet
    assert all(j.origin == "reconcile" and j.target == target for j in jobs)
    last = runtime.status.last_reconcile()
    assert last is not None
    assert (last["drift"], last["enqueued"]) == (report.drift(), 4)

    again = run_reconcile(runtime, pacing=Pacing(jobs_per_minute=100), sleep=slept.append)
    assert {j.job_id for j in again.jobs} >= {j.job_id for j in jobs}  # same ids: no-ops


def post(body: object) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest(method="POST", url="/api/resync", body=raw).get_body()


def test_resync_queues_a_plan_and_resyncs_one_tag_at_once(runtime: LocalRuntime) -> None:
    target = runtime.settings.targets[0].login_server
    dry = handle_resync(runtime, post({"dry_run": True}))
    assert dry.status_code == 202
    assert runtime.plans.depth() == 1 and runtime.queue.depth() == 0

    done = handle_resync(runtime, post({"repository": "app3", "tag": "v0", "target": target}))
    assert done.status_code == 202
    assert done.body["enqueued"] == 1
    assert done.body["jobs"][0]["digest"] == manifest_digest(0)
    one = handle_resync(runtime, post({"repository": "app1", "tag": "v1"}))
    assert (one.status_code, one.body["enqueued"]) == (202, 0)  # app1:v1 is in step
    assert [(j.repository, j.tag, j.origin) for j in drain(runtime)] == [("app3", "v0", "resync")]

    refused = handle_resync(runtime, post({"target": "registry.example.com"}))
    assert refused.status_code == 400


def test_status_summarises_the_last_hour_and_one_image(runtime: LocalRuntime) -> None:
    target = runtime.settings.targets[0].login_server
    now = datetime.now(UTC)
    base = CopyJob.from_dict(
        {
            "version": 1,
            "action": "push",
            "source": runtime.settings.source,
            "target": target,
            "repository": "app0",
            "digest": manifest_digest(0),
        }
    )
    for tag, outcome, lag in [
        ("v0", Outcome.COPIED, 3),
        ("v1", Outcome.FAILED, 40),
        ("v2", Outcome.COPIED, 5),
    ]:
        job = base.evolve(tag=tag, pushed_at=now - timedelta(seconds=lag), job_id="")
        runtime.status.record(JobResult(job, outcome, finished_at=now))
    runtime.queue.send(base)
    runtime.queue.send_poison("{}", "test")
    run_reconcile(runtime, sleep=lambda _: None)

    answer = handle_status(runtime, {})
    assert answer.status_code == 200
    body = answer.body
    assert body["queue"] == {"depth": 1 + 4, "poison": 1}
    assert body["lastReconcile"]["enqueued"] == 4
    assert body["targets"][target]["jobs"] == 3
    assert body["targets"][target]["failures"] == 1
    assert body["targets"][target]["lagSeconds"] == {"p50": 5.0, "p95": 40.0}

    image = handle_status(runtime, {"repository": "app0", "tag": "v1"})
    assert image.status_code == 200
    assert [(r["target"], r["outcome"]) for r in image.body["targets"]] == [(target, "failed")]
    later = handle_status(runtime, {}, now=now + timedelta(hours=2))
    assert later.body["targets"][target]["jobs"] == 0

    fresh = StorageJobQueue(runtime.queue.connection, name=f"fresh{uuid.uuid4().hex[:8]}")
    fresh.client().create_queue()  # the host creates the poison queue only when needed
    runtime.queue = fresh
    assert handle_status(runtime, {}).body["queue"] == {"depth": 0, "poison": 0}


def test_replay_moves_poison_messages_back_all_or_by_repository(runtime: LocalRuntime) -> None:
    job = CopyJob.from_dict(
        {
            "version": 1,
            "action": "push",
            "source": runtime.settings.source,
            "target": runtime.settings.targets[0].login_server,
            "repository": "app0",
            "digest": manifest_digest(0),
        }
    )
    for repository in ("app0", "app1", "app1"):
        runtime.queue.send_poison(job.evolve(repository=repository, job_id="").to_json(), "boom")
    request = func.HttpRequest(method="POST", url="/api/replay", body=b'{"repository": "app1"}')
    first = handle_replay(runtime, request.get_body())
    assert (first.status_code, first.body["replayed"]) == (200, 2)
    rest = handle_replay(runtime, b"")
    assert (rest.status_code, rest.body["replayed"]) == (200, 1)
    assert sorted(j.repository for j in drain(runtime)) == ["app0", "app1", "app1"]
