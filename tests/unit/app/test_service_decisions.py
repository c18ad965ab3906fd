"""The worker's decisions (``replicator.app.service.replicate``) on in-memory fakes of its
ports: claims, deferral, the delete policy, already present, the source read now, import
and its fallback, transient and permanent failures. No registry, no Azurite: seconds.
The real-component tier (tests/integration/test_worker.py) runs the same paths for real."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from replicator.adapters.acr.errors import TARGET_AUTHORIZATION, ImportUnavailableError
from replicator.adapters.azure.claims import CLAIM_LEASE, Claim
from replicator.app import service
from replicator.app.ports import DeliveryPath
from replicator.domain.config import DeletePolicy, Settings
from replicator.domain.errors import (
    DeferRequested,
    PermanentRegistryError,
    TransientRegistryError,
)
from replicator.domain.model import Action, CopyJob, CopyReport, Outcome, Strategy, Target, utcnow
from tests.fakes import FakeClaims, Fakes, digest_of, fake_runtime

SRC, DR = "source.example", "dr.example"
ACR_SRC, ACR_DR = "src.azurecr.io", "dr.azurecr.io"
DR_ID = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/dr"
OLD, NEW, NEWER = digest_of("old"), digest_of("new"), digest_of("newer")
PUSHED = datetime(2026, 12, 1, 12, 0, tzinfo=utcnow().tzinfo)


def copying(delete_policy: DeletePolicy | None = None) -> Settings:
    return Settings(SRC, (Target(DR),), delete_policy=delete_policy or DeletePolicy())


def importing(strategy: Strategy = Strategy.AUTO) -> Settings:
    return Settings(source=ACR_SRC, targets=(Target(ACR_DR, DR_ID, strategy),))


def push(fakes: Fakes, digest: str = NEW, tag: str | None = "v1", **changes: object) -> CopyJob:
    settings = fakes.runtime.settings
    job = CopyJob(
        Action.PUSH,
        settings.source,
        settings.targets[0].login_server,
        "app",
        digest,
        tag,
        pushed_at=PUSHED,
        origin="event",
    )
    return job.evolve(**changes)


def delete(fakes: Fakes, digest: str = OLD, tag: str | None = "v1", **changes: object) -> CopyJob:
    return push(fakes, digest, tag, **changes).evolve(action=Action.DELETE, pushed_at=None)


# -- claims ---------------------------------------------------------------------------------
def test_an_owned_claim_copies_and_marks_the_push_done() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    job = push(fakes)
    result = service.replicate(fakes.runtime, job)
    assert result.outcome is Outcome.COPIED
    assert fakes.target.tag_of("app", "v1") == NEW
    assert fakes.claims.log == [(job.job_id, "owned"), (job.job_id, "done")]
    assert fakes.claims.rows[job.job_id].done


def test_a_push_already_done_is_a_duplicate_and_not_copied_again() -> None:
    """The claim says done although the target lacks the image: the claim decides."""
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    job = push(fakes)
    fakes.claims.claim(job)
    fakes.claims.release(job, done=True)
    result = service.replicate(fakes.runtime, job)
    assert (result.outcome, result.error) == (Outcome.ALREADY_PRESENT, "duplicate")
    assert fakes.copier.copies == []
    assert fakes.status.results == []  # the first delivery's row tells the truth
    assert fakes.source.calls == [] and fakes.target.calls == []


def test_a_push_under_way_elsewhere_is_checked_back_later_not_copied() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    job = push(fakes)
    assert fakes.claims.claim(job) is Claim.OWNED  # another worker holds it
    result = service.replicate(fakes.runtime, job)
    assert result.outcome is Outcome.DEFERRED
    assert fakes.queue.sent == [(job, fakes.runtime.busy_recheck_seconds)]
    assert fakes.copier.copies == [] and fakes.status.results == []
    assert not fakes.claims.rows[job.job_id].done  # the other worker's claim is left alone


def test_a_claim_whose_worker_died_is_taken_over_after_the_lease() -> None:
    now = [PUSHED]
    fakes = fake_runtime(copying(), claims=FakeClaims(clock=lambda: now[0]))
    fakes.source.put("app", NEW, "v1")
    job = push(fakes)
    fakes.claims.claim(job)  # its worker dies
    now[0] = PUSHED + CLAIM_LEASE + timedelta(seconds=1)
    assert service.replicate(fakes.runtime, job).outcome is Outcome.COPIED
    assert fakes.copier.copies == [f"app@{NEW}->{DR}"]


def test_a_delivery_that_loses_the_takeover_race_does_not_copy() -> None:
    """Two deliveries read the expired claim; the other one replaces it first, so this
    one's replace (If-Match on the row it read) is refused: busy, checked back later."""
    now = [PUSHED]
    claims = FakeClaims(clock=lambda: now[0])
    fakes = fake_runtime(copying(), claims=claims)
    fakes.source.put("app", NEW, "v1")
    job = push(fakes)
    claims.claim(job)  # its worker dies
    now[0] = PUSHED + CLAIM_LEASE + timedelta(seconds=1)
    taken: list[Claim] = []
    claims.between_read_and_write = lambda: taken.append(claims.claim(job))
    result = service.replicate(fakes.runtime, job)
    assert taken == [Claim.OWNED]
    assert result.outcome is Outcome.DEFERRED
    assert fakes.copier.copies == []


@pytest.mark.parametrize("origin", ["reconcile", "resync", "replay"])
def test_jobs_not_made_from_a_push_event_are_not_claimed(origin: str) -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    result = service.replicate(fakes.runtime, push(fakes, origin=origin))
    assert result.outcome is Outcome.COPIED
    assert fakes.claims.log == []


# -- deferral -------------------------------------------------------------------------------
def test_a_wait_too_long_to_sleep_sends_the_job_on_with_its_delay_not_a_failure() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    fakes.copier.faults.add("copy_image", DeferRequested("429 Retry-After: 120", delay_seconds=120))
    job = push(fakes)
    result = service.replicate(fakes.runtime, job)  # does not raise
    assert result.outcome is Outcome.DEFERRED
    ((sent, delay),) = fakes.queue.sent
    assert sent == job and 118 <= delay <= 120
    assert job.job_id not in fakes.claims.rows  # released: the re-sent job can claim it
    assert [r.outcome for r in fakes.status.results] == [Outcome.DEFERRED]


def test_a_job_due_later_is_sent_on_without_touching_a_registry() -> None:
    fakes = fake_runtime(copying())
    job = push(fakes, not_before=utcnow() + timedelta(hours=2))
    result = service.replicate(fakes.runtime, job)
    assert result.outcome is Outcome.DEFERRED
    ((sent, delay),) = fakes.queue.sent
    assert sent == job and 7100 <= delay <= 7200
    assert fakes.source.calls == [] and fakes.target.calls == [] and fakes.claims.log == []


# -- the delete policy ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "source_keeps",
    [None, "other"],
    ids=["source-lost-the-digest", "source-holds-it-under-another-tag"],
)
def test_keep_never_deletes(source_keeps: str | None) -> None:
    fakes = fake_runtime(copying(), deletes_tags=True)
    if source_keeps:
        fakes.source.put("app", OLD, source_keeps)
    fakes.target.put("app", OLD, "v1", "other")
    before = fakes.target.snapshot()
    for job in (delete(fakes), delete(fakes, tag=None)):
        result = service.replicate(fakes.runtime, job)
        assert result.outcome is Outcome.DELETE_KEPT
    assert fakes.target.snapshot() == before
    assert not [c for c in fakes.target.calls if c.startswith("DELETE")]


def test_propagate_deletes_what_the_source_lost() -> None:
    fakes = fake_runtime(copying(delete_policy=DeletePolicy("propagate")))
    fakes.target.put("app", OLD, "v1")
    result = service.replicate(fakes.runtime, delete(fakes))
    assert result.outcome is Outcome.DELETED
    assert not fakes.target.holds("app", OLD)


def test_propagate_leaves_a_tag_the_source_has_again() -> None:
    fakes = fake_runtime(copying(delete_policy=DeletePolicy("propagate")))
    fakes.source.put("app", NEW, "v1")
    fakes.target.put("app", OLD, "v1")
    result = service.replicate(fakes.runtime, delete(fakes))
    assert result.outcome is Outcome.DELETE_SKIPPED
    assert fakes.target.tag_of("app", "v1") == OLD


def test_propagate_untags_when_the_source_holds_the_digest_under_another_tag() -> None:
    fakes = fake_runtime(copying(delete_policy=DeletePolicy("propagate")), deletes_tags=True)
    fakes.source.put("app", OLD, "other")
    fakes.target.put("app", OLD, "v1", "other")
    result = service.replicate(fakes.runtime, delete(fakes))
    assert (result.outcome, result.strategy) == (Outcome.DELETED, DeliveryPath.UNTAG)
    assert fakes.target.tag_of("app", "v1") is None
    assert fakes.target.tag_of("app", "other") == OLD  # never deleted by digest


def test_a_registry_that_refuses_tag_deletes_keeps_the_tag_and_is_remembered() -> None:
    fakes = fake_runtime(copying(delete_policy=DeletePolicy("propagate")), deletes_tags=False)
    fakes.source.put("app", OLD, "other")
    fakes.target.put("app", OLD, "v1", "other")
    result = service.replicate(fakes.runtime, delete(fakes))
    assert result.outcome is Outcome.DELETE_SKIPPED
    assert fakes.target.tag_of("app", "v1") == OLD and fakes.target.holds("app", OLD)
    assert "refuses tag deletes" in (fakes.status.untag_refused(DR) or "")


def test_propagate_after_defers_the_first_delivery_by_the_policy_delay() -> None:
    fakes = fake_runtime(copying(delete_policy=DeletePolicy("propagate-after", 3600)))
    fakes.target.put("app", OLD, "v1")
    result = service.replicate(fakes.runtime, delete(fakes))
    assert result.outcome is Outcome.DEFERRED
    ((sent, delay),) = fakes.queue.sent
    assert sent.not_before is not None and 3590 <= delay <= 3600
    assert fakes.target.holds("app", OLD) and fakes.target.calls == []


# -- what the source holds now --------------------------------------------------------------
def test_already_present_is_not_copied() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    fakes.target.put("app", NEW, "v1")
    result = service.replicate(fakes.runtime, push(fakes))
    assert (result.outcome, result.digest) == (Outcome.ALREADY_PRESENT, NEW)
    assert fakes.copier.copies == []


def test_an_old_job_never_sets_the_tag_back_to_an_older_digest() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", OLD)
    fakes.source.put("app", NEW, "v1")  # the tag moved on since the old job was made
    fakes.target.put("app", NEW, "v1")
    result = service.replicate(fakes.runtime, push(fakes, OLD))
    assert (result.outcome, result.digest) == (Outcome.ALREADY_PRESENT, NEW)
    assert fakes.target.tag_of("app", "v1") == NEW and fakes.copier.copies == []


def test_an_old_job_copies_what_the_tag_names_now() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", OLD)
    fakes.source.put("app", NEW, "v1")
    result = service.replicate(fakes.runtime, push(fakes, OLD))
    assert (result.outcome, result.digest) == (Outcome.COPIED, NEW)
    assert fakes.target.tag_of("app", "v1") == NEW


def test_a_tag_the_source_lost_is_source_missing_and_not_copied() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW)  # the digest, no tag
    result = service.replicate(fakes.runtime, push(fakes))
    assert result.outcome is Outcome.SOURCE_MISSING and fakes.copier.copies == []


def test_a_job_for_a_registry_not_configured_fails_without_a_request() -> None:
    fakes = fake_runtime(copying())
    job = push(fakes).evolve(target="elsewhere.example", job_id="")
    result = service.replicate(fakes.runtime, job)
    assert result.outcome is Outcome.FAILED and "outside the configured" in (result.error or "")
    assert fakes.source.calls == [] and fakes.target.calls == []


# -- import, and its fallback ---------------------------------------------------------------
def test_an_import_is_recorded_as_the_path_that_ran() -> None:
    fakes = fake_runtime(importing())
    fakes.source.put("app", NEW, "v1")
    result = service.replicate(fakes.runtime, push(fakes))
    assert (result.outcome, result.strategy) == (Outcome.IMPORTED, DeliveryPath.IMPORT)
    assert fakes.importer.imports == [f"app@{NEW}->{ACR_DR}"] and fakes.copier.copies == []
    assert fakes.status.images("app", "v1")[0]["strategy"] == "import"


def test_a_refused_import_under_auto_falls_back_to_a_copy_and_says_why() -> None:
    fakes = fake_runtime(importing())
    fakes.source.put("app", NEW, "v1")
    fakes.importer.refuse = ImportUnavailableError("403", reason=TARGET_AUTHORIZATION)
    result = service.replicate(fakes.runtime, push(fakes))
    assert (result.outcome, result.strategy) == (Outcome.COPIED, DeliveryPath.COPY)
    assert f"copied, not imported ({TARGET_AUTHORIZATION})" in (result.error or "")
    assert fakes.target.tag_of("app", "v1") == NEW
    row = fakes.status.images("app", "v1")[0]
    assert row["strategy"] == "copy" and TARGET_AUTHORIZATION in str(row["lastError"])


def test_a_refused_import_under_strategy_import_fails_and_never_copies() -> None:
    fakes = fake_runtime(importing(Strategy.IMPORT))
    fakes.source.put("app", NEW, "v1")
    fakes.importer.refuse = ImportUnavailableError("403", reason=TARGET_AUTHORIZATION)
    result = service.replicate(fakes.runtime, push(fakes))
    assert result.outcome is Outcome.FAILED and fakes.copier.copies == []


def test_an_import_target_whose_data_plane_does_not_answer_is_imported_into() -> None:
    fakes = fake_runtime(importing())
    fakes.source.put("app", NEW, "v1")
    fakes.target.unreachable = True
    result = service.replicate(fakes.runtime, push(fakes))
    assert result.outcome is Outcome.IMPORTED
    assert fakes.importer.imports == [f"app@{NEW}->{ACR_DR}"]


def test_a_tag_moving_during_its_import_ends_at_the_newest_digest() -> None:
    """The import of NEW lands after the tag moved to NEWER: the worker reads the source
    again and imports NEWER, so the DR tag is not left at the digest it read first."""
    fakes = fake_runtime(importing())
    fakes.source.put("app", NEWER)
    fakes.source.put("app", NEW, "v1")
    inner = fakes.importer.import_image

    def moving(job: CopyJob, target: Target, digest: str) -> CopyReport:
        report = inner(job, target, digest)
        fakes.source.put("app", NEWER, "v1")  # pushed while the first import ran
        return report

    fakes.importer.import_image = moving  # type: ignore[method-assign]
    result = service.replicate(fakes.runtime, push(fakes))
    assert (result.outcome, result.digest) == (Outcome.IMPORTED, NEWER)
    assert fakes.target.tag_of("app", "v1") == NEWER


def test_an_import_target_that_already_holds_the_image_is_not_imported_into() -> None:
    fakes = fake_runtime(importing())
    fakes.source.put("app", NEW, "v1")
    fakes.target.put("app", NEW, "v1")
    result = service.replicate(fakes.runtime, push(fakes))
    assert result.outcome is Outcome.ALREADY_PRESENT and fakes.importer.imports == []


def test_a_tag_that_keeps_moving_during_its_imports_is_retried_not_left_behind() -> None:
    fakes = fake_runtime(importing())
    fakes.source.put("app", NEW, "v1")
    inner = fakes.importer.import_image
    pushes = iter(digest_of(f"push {i}") for i in range(100))

    def moving(job: CopyJob, target: Target, digest: str) -> CopyReport:
        report = inner(job, target, digest)
        fakes.source.put("app", next(pushes), "v1")  # the tag moves on after each import
        return report

    fakes.importer.import_image = moving  # type: ignore[method-assign]
    with pytest.raises(TransientRegistryError, match="kept moving"):
        service.replicate(fakes.runtime, push(fakes))
    assert len(fakes.importer.imports) == service.SETTLE_ROUNDS
    assert [r.outcome for r in fakes.status.results] == [Outcome.RETRYING]


# -- failures -------------------------------------------------------------------------------
def test_a_transient_failure_is_raised_for_the_queue_to_retry_and_frees_the_claim() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    fakes.copier.faults.add("copy_image", TransientRegistryError("503", status=503))
    job = push(fakes)
    with pytest.raises(TransientRegistryError):
        service.replicate(fakes.runtime, job)
    assert [r.outcome for r in fakes.status.results] == [Outcome.RETRYING]
    assert job.job_id not in fakes.claims.rows
    assert service.replicate(fakes.runtime, job, attempt=2).outcome is Outcome.COPIED


def test_a_permanent_failure_is_recorded_not_raised() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    fakes.copier.faults.add("copy_image", PermanentRegistryError("401", status=401))
    job = push(fakes)
    result = service.replicate(fakes.runtime, job)
    assert (result.outcome, result.error) == (Outcome.FAILED, "401")
    assert [r.outcome for r in fakes.status.results] == [Outcome.FAILED]
    assert job.job_id not in fakes.claims.rows  # not done: a replay may try again


def test_a_copy_target_that_does_not_answer_is_retried() -> None:
    fakes = fake_runtime(copying())
    fakes.source.put("app", NEW, "v1")
    fakes.target.unreachable = True
    with pytest.raises(TransientRegistryError):
        service.replicate(fakes.runtime, push(fakes))
    assert fakes.copier.copies == []
