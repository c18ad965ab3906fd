"""Referrer drift through reconcile (``run_reconcile`` -> ``referrer_sweep.check_referrers``)
on the in-memory fakes of the ports (``tests/fakes.py``: ``FakeRegistries`` as the
``ReferrerLister``, ``FakeCursors`` as the ``CursorStore``), for the four shape pairs of
referrers API and fallback tag: a signature whose event was lost is found and brought by
the worker, a second pass enqueues nothing, the cursor moves on within the pass's bound,
``keep`` never deletes, and nothing but the registry clients paces (the pass's bound is a
count of calls). tests/integration/test_referrer_drift.py runs the same on real
registries and Azurite; tests/integration/test_fakes_contract.py holds the fakes to them."""

from __future__ import annotations

import pytest

from replicator.app import service
from replicator.app.api import handle_status
from replicator.app.reconcile import Pacing, ReconcileReport, run_reconcile
from replicator.app.referrer_checks import Pace
from replicator.app.referrer_drift import Image
from replicator.app.referrer_sweep import CURSOR_PREFIX, sweep_all
from replicator.domain import budgets
from replicator.domain.budgets import Limits
from replicator.domain.config import DeletePolicy, Settings
from replicator.domain.model import Action, Outcome, Target
from replicator.domain.referrers import ListedReferrer
from tests.fakes import SBOM, SIGNATURE, Fakes, fake_runtime

SRC, DR = "source.example", "dr.example"
QUICK = Pacing(batch=1000, pause_seconds=0)
SHAPES = ["api-api", "fallback-fallback", "api-fallback", "fallback-api"]


def shaped(shape: str, policy: str = "keep", **settings: object) -> Fakes:
    kinds = shape.split("-")
    fakes = fake_runtime(
        Settings(
            source=SRC,
            targets=(Target(DR),),
            delete_policy=DeletePolicy(policy),
            **settings,  # type: ignore[arg-type]
        )
    )
    fakes.source.referrers_api = kinds[0] == "api"
    fakes.target.referrers_api = kinds[1] == "api"
    return fakes


def reconcile(fakes: Fakes, slept: list[float] | None = None) -> ReconcileReport:
    return run_reconcile(fakes.runtime, pacing=QUICK, sleep=(slept or []).append)


def run_jobs(fakes: Fakes) -> list[Outcome]:
    jobs, fakes.queue.sent[:] = fakes.queue.jobs, []
    return [service.replicate(fakes.runtime, job).outcome for job in jobs]


def in_step_pair(fakes: Fakes, repository: str = "app") -> str:
    """``repository:v1`` in step on both sides (an index of two platforms, an SBOM on
    the index), as a copy leaves it; the index digest."""
    index = fakes.source.put_image(repository, f"{repository}-v1", "v1")
    fakes.source.attach(repository, index, SBOM)
    fakes.target.put_image(repository, f"{repository}-v1", "v1")
    fakes.target.attach(repository, index, SBOM)
    return index


@pytest.mark.parametrize("shape", SHAPES)
def test_a_signature_whose_event_was_lost_is_found_brought_and_not_enqueued_again(
    shape: str,
) -> None:
    fakes = shaped(shape)
    index = in_step_pair(fakes)
    platform = fakes.source.list_subjects("app", index)
    assert platform is not None
    lost = fakes.source.attach("app", platform[1], SIGNATURE)  # on a child: its event lost

    first = reconcile(fakes)
    (found,) = first.referrers
    assert [(r.subject, r.digest, r.artifact_type) for r in found.missing] == [
        (platform[1], lost, SIGNATURE)
    ]
    assert [(j.action, j.repository, j.digest, j.tag, j.origin) for j in fakes.queue.jobs] == [
        (Action.PUSH, "app", lost, None, "reconcile")
    ]
    assert first.enqueued == 1
    assert all(o.succeeded for o in run_jobs(fakes))
    assert ListedReferrer(lost, SIGNATURE) in fakes.target.referrers_of("app", platform[1])

    second = reconcile(fakes)
    assert (second.enqueued, fakes.queue.sent, second.referrers[0].missing) == (0, [], ())


def test_the_cursor_moves_on_within_the_pass_bound_and_a_lap_finds_the_last_image() -> None:
    """Twelve images in step, a source referrers budget of 1 a minute (0.5 the share, 10
    minutes a pass: 5 calls): each pass checks part of the registry from the cursor the
    last one left in the cursor store; the signature on the last image is found when the
    sweep reaches it."""
    fakes = shaped("api-api", rate_limits={SRC: Limits(referrers=1.0)})
    repos = [f"app{n:02d}" for n in range(12)]
    indexes = {r: in_step_pair(fakes, r) for r in repos}
    keys = sorted(Image(r, d).key for r, d in indexes.items())
    lost = fakes.source.attach(repos[-1], indexes[repos[-1]], SIGNATURE)

    (one,) = reconcile(fakes).referrers
    assert 0 < one.checked < 12 and one.stopped == "the pass's referrers budget is spent"
    assert one.cursor is not None and (one.cursor.position, one.cursor.laps) == (
        keys[one.checked - 1],
        0,
    )
    assert fakes.cursors.get(CURSOR_PREFIX + DR) == one.cursor
    assert one.missing == ()

    passes = [one]
    while passes[-1].cursor is not None and passes[-1].cursor.laps == 0:
        assert len(passes) < 12, "the sweep never completed a lap"
        (more,) = reconcile(fakes).referrers
        assert more.checked > 0
        passes.append(more)
    last = passes[-1]
    assert sum(p.checked for p in passes) >= 12
    assert [r.digest for r in last.missing] == [lost]
    assert [j.digest for j in fakes.queue.jobs] == [lost]
    assert fakes.cursors.get(CURSOR_PREFIX + DR) == last.cursor
    status = handle_status(fakes.runtime, {}).body
    assert isinstance(status, dict) and status["referrers"][DR]["laps"] == 1


@pytest.mark.parametrize("shape", ["api-api", "fallback-fallback"])
def test_keep_never_deletes_nor_lists_dr_where_the_source_has_none(shape: str) -> None:
    fakes = shaped(shape, "keep")
    index = fakes.source.put_image("app", "app-v1", "v1")
    fakes.target.put_image("app", "app-v1", "v1")
    extra = fakes.target.attach("app", index, SIGNATURE, "only in DR")

    report = reconcile(fakes)
    assert report.referrers[0].extra == () and fakes.queue.sent == []
    assert not [c for c in fakes.target.calls if c.startswith("REFERRERS")]
    assert fakes.target.holds("app", extra)


@pytest.mark.parametrize("shape", ["api-api", "fallback-fallback"])
def test_propagate_deletes_a_referrer_only_dr_lists(shape: str) -> None:
    fakes = shaped(shape, "propagate")
    index = fakes.source.put_image("app", "app-v1", "v1")
    fakes.target.put_image("app", "app-v1", "v1")
    extra = fakes.target.attach("app", index, SIGNATURE, "only in DR")

    reconcile(fakes)
    assert [(j.action, j.digest, j.tag) for j in fakes.queue.jobs] == [(Action.DELETE, extra, None)]
    assert run_jobs(fakes) == [Outcome.DELETED]
    assert not fakes.target.holds("app", extra)
    assert fakes.target.referrers_of("app", index) == ()  # off the fallback tag too
    assert reconcile(fakes).enqueued == 0


def test_a_pass_is_bounded_in_calls_and_nothing_but_the_registry_clients_paces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A source referrers budget of 2 a minute at share 1: 20 calls in a pass of 10
    minutes. Each image costs 4 source calls (its index, two platforms, then the SBOM both
    sides hold); the pass stops at the first group of images (4 at a time) that reaches
    the bound; no token bucket of its own is consulted and nothing sleeps."""

    def second_bucket(*_: object, **__: object) -> float:
        raise AssertionError("referrer drift consulted a token bucket of its own")

    monkeypatch.setattr(budgets.TokenBucket, "take", second_bucket)
    fakes = shaped("api-api", rate_limits={SRC: Limits(referrers=2.0)}, source_share=1.0)
    for n in range(40):
        in_step_pair(fakes, f"app{n:02d}")
    assert Pace(fakes.runtime.settings).bound(SRC) == 20

    slept: list[float] = []
    (found,) = reconcile(fakes, slept).referrers
    calls = [c for c in fakes.source.calls if c.startswith("REFERRERS")]
    assert 20 <= len(calls) <= 20 + 4 * 4  # the bound, plus the images under way
    assert found.checked * 4 == len(calls) and found.checked < 40
    assert slept == []


def test_diff_checks_everything_in_one_pass_unbounded_and_unpaced_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def second_bucket(*_: object, **__: object) -> float:
        raise AssertionError("diff --referrers consulted a token bucket of its own")

    monkeypatch.setattr(budgets.TokenBucket, "take", second_bucket)
    fakes = shaped("api-fallback", rate_limits={SRC: Limits(referrers=2.0)}, source_share=1.0)
    indexes = [in_step_pair(fakes, f"app{n:02d}") for n in range(12)]
    lost = fakes.source.attach("app11", indexes[-1], SIGNATURE)
    report = reconcile(fakes)  # the listings diff makes
    drift = report.targets[0]
    found = sweep_all(
        fakes.runtime.referrers, fakes.runtime.settings, report.source_entries, DR, drift.entries
    )
    assert found.checked == 12 and found.stopped is None
    assert [r.digest for r in found.missing] == [lost]
