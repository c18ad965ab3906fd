"""Reconcile's decisions (``replicator.app.reconcile.run_reconcile``) on in-memory fakes:
which jobs the drift makes (missing, stale, extra), the delete policy, what an unread
listing keeps out of the plan, the pacing, and that a pass over a pair the worker has put
in step enqueues nothing. The listings are the real ones (``RegistryLister``) over the
fake registries' distribution-spec answers. Seconds; tests/integration/test_reconcile.py
runs the same on real registries and Azurite."""

from __future__ import annotations

import pytest

from replicator.app import service
from replicator.app.reconcile import Pacing, run_reconcile
from replicator.domain.config import DeletePolicy, Settings
from replicator.domain.errors import TransientRegistryError
from replicator.domain.model import Action, Outcome, Target
from tests.fakes import Fakes, digest_of, fake_runtime

SRC, DR = "source.example", "dr.example"
A, B, C, OLD, GONE = (digest_of(x) for x in ("a", "b", "c", "old", "gone"))
QUICK = Pacing(batch=1000, pause_seconds=0)


def drifted(policy: str = "keep", *, deletes_tags: bool = True) -> Fakes:
    """app:v1 in step, app:v2 stale, team/web:latest missing, app:gone extra (a digest the
    source lacks), app:alias extra but retagged (the source holds its digest as app:v1)."""
    settings = Settings(source=SRC, targets=(Target(DR),), delete_policy=DeletePolicy(policy))
    fakes = fake_runtime(settings, deletes_tags=deletes_tags)
    fakes.source.put("app", A, "v1")
    fakes.source.put("app", B, "v2")
    fakes.source.put("team/web", C, "latest")
    fakes.target.put("app", A, "v1", "alias")
    fakes.target.put("app", OLD, "v2")
    fakes.target.put("app", GONE, "gone")
    return fakes


def planned(fakes: Fakes) -> set[tuple[str, str, str | None, str]]:
    return {(j.action.value, j.repository, j.tag, j.digest) for j in fakes.queue.jobs}


def run_jobs(fakes: Fakes) -> list[Outcome]:
    """Deliver every queued job to the worker, as the queue host would; empties the queue."""
    jobs, fakes.queue.sent[:] = fakes.queue.jobs, []
    return [service.replicate(fakes.runtime, job).outcome for job in jobs]


def test_missing_and_stale_tags_get_a_push_job_each_under_keep() -> None:
    fakes = drifted("keep")
    report = run_reconcile(fakes.runtime, pacing=QUICK, sleep=lambda _: None)
    assert report.drift() == {DR: {"missing": 1, "stale": 1, "extra": 2}}
    assert planned(fakes) == {("push", "app", "v2", B), ("push", "team/web", "latest", C)}
    assert all(j.origin == "reconcile" for j in fakes.queue.jobs)
    assert fakes.status.reconciles == [(report.drift(), 2)]


def test_extra_tags_get_a_delete_job_each_under_propagate() -> None:
    fakes = drifted("propagate")
    run_reconcile(fakes.runtime, pacing=QUICK, sleep=lambda _: None)
    deletes = {j for j in planned(fakes) if j[0] == Action.DELETE.value}
    assert deletes == {("delete", "app", "gone", GONE), ("delete", "app", "alias", A)}


def test_a_target_that_refuses_tag_deletes_gets_no_untag_job_but_still_its_deletes() -> None:
    fakes = drifted("propagate")
    fakes.status.record_untag_refused(DR, f"{DR} refuses tag deletes (HTTP 400, UNSUPPORTED)")
    run_reconcile(fakes.runtime, pacing=QUICK, sleep=lambda _: None)
    deletes = {j for j in planned(fakes) if j[0] == Action.DELETE.value}
    assert deletes == {("delete", "app", "gone", GONE)}


@pytest.mark.parametrize("policy", ["keep", "propagate"])
def test_a_second_pass_after_the_worker_ran_the_jobs_enqueues_nothing(policy: str) -> None:
    fakes = drifted(policy)
    first = run_reconcile(fakes.runtime, pacing=QUICK, sleep=lambda _: None)
    outcomes = run_jobs(fakes)
    assert outcomes and all(o.succeeded for o in outcomes)
    second = run_reconcile(fakes.runtime, pacing=QUICK, sleep=lambda _: None)
    assert (first.enqueued > 0, second.enqueued, fakes.queue.sent) == (True, 0, [])
    left = {"keep": 2, "propagate": 0}[policy]  # keep: the extras stay, and get no job
    assert second.drift() == {DR: {"missing": 0, "stale": 0, "extra": left}}
    if policy == "keep":
        assert fakes.target.tag_of("app", "gone") == GONE
        assert fakes.target.tag_of("app", "alias") == A
    else:
        assert fakes.target.tag_of("app", "alias") is None and fakes.target.holds("app", A)


def test_a_repository_the_source_could_not_list_is_left_out_not_deleted() -> None:
    """An unread source repository is not drift: under propagate, its DR tags would
    otherwise all look extra and be deleted."""
    fakes = drifted("propagate")
    fakes.source.faults.add("GET /v2/app/tags/list", TransientRegistryError("503", status=503))
    report = run_reconcile(fakes.runtime, pacing=QUICK, sleep=lambda _: None)
    assert planned(fakes) == {("push", "team/web", "latest", C)}
    assert report.errors and "app" in report.errors[0]


def test_a_target_whose_catalog_cannot_be_read_gets_no_job_and_unknown_drift() -> None:
    fakes = drifted("propagate")
    fakes.target.faults.add("GET /v2/_catalog", TransientRegistryError("503", status=503))
    report = run_reconcile(fakes.runtime, pacing=QUICK, sleep=lambda _: None)
    assert report.drift() == {DR: {"missing": -1, "stale": -1, "extra": -1}}
    assert fakes.queue.sent == []


def test_jobs_go_out_paced_in_batches_and_spread_by_visibility_delay() -> None:
    fakes = drifted("propagate")
    slept: list[float] = []
    pacing = Pacing(batch=2, pause_seconds=0.25, jobs_per_minute=3)
    report = run_reconcile(fakes.runtime, pacing=pacing, sleep=slept.append)
    assert report.enqueued == 4
    assert [delay for _, delay in fakes.queue.sent] == [0, 0, 0, 60]
    assert slept == [0.25]
