from __future__ import annotations

from collections import Counter

import pytest

from replicator.app.reconcile import Pacing, enqueue
from replicator.domain.config import DeletePolicy, Settings
from replicator.domain.filters import Filters, may_hold_allowed
from replicator.domain.model import Action, CopyJob, TagEntry, Target
from replicator.domain.planning import DriftEntry, Plan, jobs_for, plan

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
KEEP = DeletePolicy()
PROPAGATE = DeletePolicy(mode="propagate")
SETTINGS = Settings(
    source="src.example.io", targets=(Target("dr1.example.io"), Target("dr2.example.io"))
)


def e(ref: str, digest: str | None) -> TagEntry:
    repository, tag = ref.split(":")
    return TagEntry(repository, tag, digest)


@pytest.mark.parametrize(
    ("source", "target", "filters", "expected"),
    [
        ([], [], Filters(), ([], [], [])),
        ([e("app:v1", A)], [e("app:v1", A)], Filters(), ([], [], [])),
        ([e("app:v1", A)], [], Filters(), (["app:v1"], [], [])),
        ([e("app:v1", A)], [e("app:v1", B)], Filters(), ([], ["app:v1"], [])),
        ([], [e("app:old", B)], Filters(), ([], [], ["app:old"])),
        ([e("app:v1", None)], [e("app:v1", None)], Filters(), ([], ["app:v1"], [])),
        ([e("app:v1", A)], [e("app:v1", None)], Filters(), ([], ["app:v1"], [])),
        (
            [e("team/a:v1", A), e("other:v1", A)],
            [e("other:x", B)],
            Filters(include=("team/**",)),
            (["team/a:v1"], [], []),
        ),
        (
            [e("app:v1", A), e("app:v1-rc", A)],
            [e("app:old-rc", C)],
            Filters(exclude=("*:*-rc",)),
            (["app:v1"], [], []),
        ),
        (
            [e("b:1", A), e("a:2", A), e("a:1", A)],
            [],
            Filters(),
            (["a:1", "a:2", "b:1"], [], []),
        ),
    ],
    ids=[
        "empty",
        "in-step",
        "missing",
        "stale",
        "extra",
        "unknown-both-is-stale",
        "unknown-target-is-stale",
        "include-both-sides",
        "exclude-both-sides",
        "sorted",
    ],
)
def test_plan(
    source: list[TagEntry],
    target: list[TagEntry],
    filters: Filters,
    expected: tuple[list[str], list[str], list[str]],
) -> None:
    result = plan(source, target, filters, KEEP)
    got = tuple(
        [f"{x.repository}:{x.tag}" for x in kind]
        for kind in (result.missing, result.stale, result.extra)
    )
    assert got == tuple(expected)
    assert result.drift is any(expected)


def test_plan_digests_and_counts_in_contract_shape() -> None:
    result = plan(
        [e("app:v1", A), e("app:v2", B), e("app:v3", C)],
        [e("app:v2", A), e("app:v3", C), e("app:gone", B)],
        Filters(),
        KEEP,
    )
    assert result.to_dict() == {
        "missing": [{"repository": "app", "tag": "v1", "source_digest": A, "target_digest": None}],
        "stale": [{"repository": "app", "tag": "v2", "source_digest": B, "target_digest": A}],
        "extra": [{"repository": "app", "tag": "gone", "source_digest": None, "target_digest": B}],
    }
    assert result.counts() == {"missing": 1, "stale": 1, "extra": 1}
    assert result.in_step == 1


def test_jobs_for_keep_copies_missing_and_stale_to_every_target() -> None:
    result = plan(
        [e("app:v1", A), e("app:v2", B)], [e("app:v2", A), e("app:x", C)], Filters(), KEEP
    )
    jobs = jobs_for(result, SETTINGS, "reconcile")
    assert [(j.target, j.tag, j.digest, j.action) for j in jobs] == [
        ("dr1.example.io", "v1", A, Action.PUSH),
        ("dr1.example.io", "v2", B, Action.PUSH),
        ("dr2.example.io", "v1", A, Action.PUSH),
        ("dr2.example.io", "v2", B, Action.PUSH),
    ]
    assert {j.origin for j in jobs} == {"reconcile"}
    assert {j.source for j in jobs} == {"src.example.io"}


def test_jobs_for_propagate_deletes_extras_of_the_plans_target() -> None:
    result = plan([], [e("app:x", C)], Filters(), PROPAGATE, target="dr2.example.io")
    jobs = jobs_for(result, SETTINGS, "resync")
    assert [(j.target, j.tag, j.digest, j.action) for j in jobs] == [
        ("dr2.example.io", "x", C, Action.DELETE)
    ]


def test_jobs_for_skips_unknown_digests_and_ids_are_stable() -> None:
    unknown = Plan(missing=(DriftEntry("app", "v1", None, None),))
    assert jobs_for(unknown, SETTINGS, "reconcile") == []
    result = plan([e("app:v1", A)], [], Filters(), KEEP, source="other.io", target="t.io")
    first, again = jobs_for(result, SETTINGS, "cli"), jobs_for(result, SETTINGS, "reconcile")
    assert [j.job_id for j in first] == [j.job_id for j in again]
    assert (first[0].source, first[0].target) == ("other.io", "t.io")


@pytest.mark.parametrize(
    ("filters", "repository", "expected"),
    [
        (Filters(), "any/repo", True),
        (Filters(include=("team/*",)), "team/app", True),
        (Filters(include=("team/*",)), "other/app", False),
        (Filters(include=("team/*:v*",)), "team/app", True),
        (Filters(include=("**:*-rc",)), "deep/a/b", True),
        (Filters(exclude=("team/scratch/**",)), "team/scratch/x", False),
        (Filters(exclude=("app:*",)), "app", False),
        (Filters(exclude=("app:**",)), "app", False),
        (Filters(exclude=("app:v1",)), "app", True),
        (Filters(exclude=("*:*-rc",)), "app", True),
    ],
    ids=[
        "no-filters",
        "include-match",
        "include-miss",
        "include-with-tag-glob",
        "include-any-repo",
        "exclude-whole-tree",
        "exclude-all-tags-star",
        "exclude-all-tags-double-star",
        "exclude-one-tag-keeps-repo",
        "exclude-some-tags-keeps-repo",
    ],
)
def test_may_hold_allowed_skips_only_repositories_no_tag_can_pass(
    filters: Filters, repository: str, expected: bool
) -> None:
    assert may_hold_allowed(filters, repository) is expected
    if not expected:  # never skip a repository that has an allowed tag
        assert not any(filters.allows(repository, t) for t in ("v1", "latest", "1.0-rc"))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def send(self, job: CopyJob, *, delay_seconds: int = 0) -> None:
        self.sent.append((job.job_id, delay_seconds))


def test_enqueue_paces_ten_thousand_jobs_in_batches_and_spreads_visibility() -> None:
    entries = [TagEntry(f"r{i // 10}", f"t{i % 10}", A) for i in range(10_000)]
    jobs = jobs_for(
        plan(entries, [], Filters(), KEEP), SETTINGS, "reconcile", target="dr1.example.io"
    )
    queue, slept = Recorder(), list[float]()
    assert enqueue(queue, jobs, Pacing(), slept.append) == 10_000
    assert len(slept) == 10_000 // Pacing().batch - 1  # a pause between batches
    delays = [d for _, d in queue.sent]
    assert delays == sorted(delays)
    assert max(delays) <= Pacing().max_spread_seconds
    per_minute = Counter(delays)
    assert max(per_minute.values()) <= Pacing().jobs_per_minute
    assert len({job_id for job_id, _ in queue.sent}) == 10_000


@pytest.mark.parametrize(
    ("source", "target", "retagged"),
    [
        ([e("app:v1", A)], [e("app:v1", A), e("app:old", A)], ["app:old"]),
        ([e("app:v1", A)], [e("app:v1", A), e("app:old", B)], []),
        ([e("other:v1", A)], [e("app:old", A)], []),  # another repository's digest
        ([], [e("app:old", A)], []),
    ],
    ids=["source-holds-digest", "digest-gone", "other-repository", "empty-source"],
)
def test_plan_marks_extras_whose_digest_the_source_still_holds(
    source: list[TagEntry], target: list[TagEntry], retagged: list[str]
) -> None:
    made = plan(source, target, Filters(), PROPAGATE)
    assert [f"{x.repository}:{x.tag}" for x in made.retagged] == retagged
    assert set(made.retagged) <= set(made.extra)


def test_jobs_for_leaves_retagged_extras_of_a_target_refusing_untag() -> None:
    made = plan(
        [e("app:v1", A)],
        [e("app:v1", A), e("app:old", A), e("app:gone", B)],
        Filters(),
        PROPAGATE,
        target="dr1.example.io",
    )
    untag = jobs_for(made, SETTINGS, "reconcile")
    assert sorted((j.action, j.tag) for j in untag) == [
        (Action.DELETE, "gone"),
        (Action.DELETE, "old"),
    ]
    refused = jobs_for(made, SETTINGS, "reconcile", untag_refused={"dr1.example.io"})
    assert [(j.action, j.tag) for j in refused] == [(Action.DELETE, "gone")]
