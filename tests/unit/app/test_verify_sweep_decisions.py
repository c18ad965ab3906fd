"""The verify sweep (``REPLICATOR_VERIFY_SWEEP``, ``replicator.app.verify_sweep``) through
reconcile (``run_reconcile``) on the in-memory fakes: the real listings, the real audit
(``replicator.app.image_audit.Auditor``) over the fakes' manifests by digest and blobs by
``HEAD`` (tests/integration/test_fakes_contract.py keeps those true to a real registry),
and the worker running what it sends. A layer gone under a manifest DR holds gives one
repair job, a child manifest gone a push job for it, a complete copy nothing; the cursor
moves on across passes and wraps round, and a deferral ends a pass where it came."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

from replicator.app import service
from replicator.app.image_audit import Auditor, audit_in_order
from replicator.app.reconcile import Pacing, ReconcileReport, run_reconcile
from replicator.domain.config import Settings
from replicator.domain.errors import DeferRequested
from replicator.domain.integrity import Image
from replicator.domain.model import Outcome, Target
from tests.fakes import FakeRegistries, FakeRegistry, Fakes, fake_runtime

SRC, DR = "source.example", "dr.example"
QUICK = Pacing(batch=1000, pause_seconds=0)
CURSOR = f"verify|{DR}"


def copied(*names: str, sweep: int = 10) -> tuple[Fakes, dict[str, str]]:
    """Two-platform images ``app:<name>`` in the source and, copied whole by the worker, in DR."""
    settings = Settings(source=SRC, targets=(Target(DR),), verify_sweep=sweep)
    fakes = fake_runtime(settings)
    digests = {name: fakes.source.put_image("app", name, name) for name in names}
    first = reconcile(fakes)
    assert first.enqueued == len(names)  # the tags were missing: a push each
    assert all(o.succeeded for o in run_jobs(fakes))
    fakes.cursors.rows.clear()  # the sweep starts over on the complete copy
    return fakes, digests


def reconcile(fakes: Fakes) -> ReconcileReport:
    return run_reconcile(fakes.runtime, pacing=QUICK, sleep=lambda _: None)


def run_jobs(fakes: Fakes) -> list[Outcome]:
    jobs, fakes.queue.sent[:] = fakes.queue.jobs, []
    return [service.replicate(fakes.runtime, job).outcome for job in jobs]


def sent(fakes: Fakes) -> list[tuple[str, str, str | None, str, bool]]:
    return [(j.action.value, j.repository, j.tag, j.digest, j.repair) for j in fakes.queue.jobs]


def test_a_complete_copy_gets_no_job_and_every_manifest_and_blob_is_checked() -> None:
    fakes, _ = copied("v1", "v2")
    heads = len(fakes.target.calls)
    report = reconcile(fakes)
    assert (report.enqueued, fakes.queue.sent) == (0, [])
    (done,) = report.verify
    assert done.counts() == {"images": 2, "checked": 2, "missing": 0, "unreadable": 0}
    walked = fakes.target.calls[heads:]
    assert sum(c.startswith("GET app:") for c in walked) == 6  # 2 indexes, 4 platforms
    assert sum(c.endswith("(blob)") for c in walked) == 8  # a config and a layer each
    assert report.drift() == {DR: {"missing": 0, "stale": 0, "extra": 0}}


def test_a_layer_gone_in_dr_gives_one_repair_job_and_the_repair_brings_it_back() -> None:
    fakes, digests = copied("v1", "v2")
    platform = fakes.target.children["app"][digests["v1"]][0]
    config, layer = fakes.target.blobs_of("app", platform)
    fakes.target.remove_blob("app", layer)
    report = reconcile(fakes)
    assert sent(fakes) == [("push", "app", None, platform, True)]
    assert report.drift()[DR]["missing"] == 1
    assert [(f.kind, f.digest, f.parent) for f in report.verify[0].findings.missing] == [
        ("blob", layer, platform)
    ]
    assert all(o.succeeded for o in run_jobs(fakes))
    assert fakes.copier.repairs == [f"app@{platform}->{DR}"]
    assert fakes.target.holds_blob("app", layer) and fakes.target.holds_blob("app", config)
    fakes.cursors.rows.clear()
    assert (reconcile(fakes).enqueued, fakes.queue.sent) == (0, [])  # complete again


def test_a_child_manifest_gone_in_dr_gives_a_push_job_for_it() -> None:
    fakes, digests = copied("v1")
    platform = fakes.target.children["app"][digests["v1"]][1]
    fakes.target.remove_manifest("app", platform)
    report = reconcile(fakes)
    assert sent(fakes) == [("push", "app", None, platform, False)]
    assert [(f.kind, f.digest, f.parent) for f in report.verify[0].findings.missing] == [
        ("manifest", platform, digests["v1"])
    ]
    assert all(o.succeeded for o in run_jobs(fakes))
    assert fakes.target.holds("app", platform)
    assert all(fakes.target.holds_blob("app", b) for b in fakes.target.blobs_of("app", platform))


def test_the_cursor_moves_on_across_passes_and_wraps_round() -> None:
    fakes, digests = copied("v1", "v2", "v3", sweep=2)
    order = sorted(digests.values())  # the sweep goes by repository@digest
    first = reconcile(fakes).verify[0]
    cursor = fakes.cursors.get(CURSOR)
    assert (first.images, first.checked, cursor.position, cursor.laps) == (
        3,
        2,
        f"app@{order[1]}",
        0,
    )
    # a layer gone under the first image, which the first pass audited complete
    platform = fakes.target.children["app"][order[0]][0]
    fakes.target.remove_blob("app", fakes.target.blobs_of("app", platform)[1])
    calls = len(fakes.target.calls)
    second = reconcile(fakes).verify[0]
    walked = {c.removeprefix("GET app:") for c in fakes.target.calls[calls:] if c.startswith("GET")}
    assert {order[2], order[0]} <= walked and order[1] not in walked  # the third, then round
    cursor = fakes.cursors.get(CURSOR)
    assert (second.checked, cursor.position, cursor.laps) == (2, f"app@{order[0]}", 1)
    assert cursor.counts == {"images": 3, "checked": 2, "missing": 1, "unreadable": 0}
    assert sent(fakes) == [("push", "app", None, platform, True)]


def test_off_audits_nothing() -> None:
    fakes, _ = copied("v1", sweep=10)
    fakes.runtime.settings = Settings(source=SRC, targets=(Target(DR),))
    calls = len(fakes.target.calls)
    report = reconcile(fakes)
    assert report.verify == ()
    assert not any(c.endswith("(blob)") for c in fakes.target.calls[calls:])
    assert fakes.cursors.get(CURSOR).position == ""


def test_a_deferral_ends_the_pass_there_and_the_next_pass_goes_on_from_it() -> None:
    fakes, digests = copied("v1", "v2", "v3", sweep=3)
    order = sorted(digests.values())
    wait = DeferRequested("the read budget is spent", delay_seconds=90, operation="GET manifest")
    fakes.target.faults.add(f"GET app:{order[1]}", wait)
    first = reconcile(fakes).verify[0]
    cursor = fakes.cursors.get(CURSOR)
    assert (first.checked, first.stopped, cursor.position) == (1, str(wait), f"app@{order[0]}")
    assert fakes.queue.sent == []  # a deferral is no finding
    second = reconcile(fakes).verify[0]
    assert (second.checked, second.stopped) == (3, None)
    assert fakes.cursors.get(CURSOR).position == f"app@{order[0]}"  # order[1], [2], round to [0]


def test_the_walk_gives_results_in_order_and_never_queues_far_ahead() -> None:
    registry = FakeRegistry(DR)
    digests = [registry.put_image("app", f"i{n}", f"t{n}") for n in range(40)]
    taken: list[str] = []

    def feed() -> Iterator[Image]:
        for digest in digests:
            taken.append(digest)
            yield Image("app", digest)

    auditor = Auditor(FakeRegistries(registry), SRC, DR)
    with closing(audit_in_order(auditor, feed(), 3)) as walk:
        image, result = next(walk)
        assert (image.digest, result.missing, result.manifests) == (digests[0], [], 3)
        assert len(taken) <= 2 * 3 + 1  # a window of twice the workers, not all 40
        rest = [image.digest for image, _ in walk]
    assert rest == digests[1:]
