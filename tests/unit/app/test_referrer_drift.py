"""Referrer drift's decisions (replicator.app.referrer_drift) and its pacing
(replicator.app.referrer_checks.Pace): tables of cases, no registry."""

from __future__ import annotations

import pytest

from replicator.app.referrer_checks import Pace
from replicator.app.referrer_drift import (
    Image,
    Referrer,
    advance,
    changed_subjects,
    compare_subject,
    in_step_images,
    is_fallback_tag,
    needs_target,
    pass_budget,
    plan_sweep,
    read_through,
    referrer_jobs,
    rolled,
    sweep_minutes,
)
from replicator.domain.budgets import Limits
from replicator.domain.config import Settings
from replicator.domain.model import Action, TagEntry, Target
from replicator.domain.referrers import listed_referrers

A, B, C, D = ("sha256:" + c * 64 for c in "abcd")
R1, R2, R3 = ("sha256:" + c * 64 for c in "123")
SIG, SBOM = "application/vnd.dev.cosign.signature", "application/spdx+json"


def fallback(digest: str) -> str:
    return digest.replace(":", "-")


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (fallback(A), True),
        ("sha256-" + "a" * 63, False),  # too short
        ("sha256-" + "A" * 64, False),  # the schema's hex is lower case
        ("sha256-" + "a" * 64 + ".sig", False),  # cosign's old tag is an image tag
        ("latest", False),
        ("sha512-" + "a" * 64, True),  # a sha512 subject: its hex cut to 64
    ],
    ids=["fallback", "short", "upper", "cosign-sig-tag", "plain", "sha512"],
)
def test_is_fallback_tag(tag: str, expected: bool) -> None:
    assert is_fallback_tag(tag) is expected


def test_in_step_images_are_the_tags_at_the_same_digest_once_each_without_fallback_tags() -> None:
    source = [
        TagEntry("app", "v1", A),
        TagEntry("app", "latest", A),  # same image under two tags: once
        TagEntry("app", "v2", B),  # stale in DR
        TagEntry("app", "v3", C),  # missing in DR
        TagEntry("app", fallback(A), D),  # the referrers index of A: not an image
        TagEntry("team/app", "v1", A),
        TagEntry("app", "nodigest", None),
    ]
    target = [
        TagEntry("app", "v1", A),
        TagEntry("app", "latest", A),
        TagEntry("app", "v2", C),
        TagEntry("app", fallback(A), D),
        TagEntry("team/app", "v1", A),
        TagEntry("app", "nodigest", None),
    ]
    found = in_step_images(source, target)
    assert found == (Image("app", A), Image("team/app", A))
    assert [i.key for i in found] == sorted(i.key for i in found)


def test_changed_subjects_are_fallback_tags_the_source_moved_or_dr_lacks() -> None:
    source = [
        TagEntry("app", fallback(A), R1),  # DR has another index
        TagEntry("app", fallback(B), R2),  # DR has the same index
        TagEntry("app", fallback(C), R3),  # DR has none
        TagEntry("app", "v1", A),
    ]
    source.append(TagEntry("app", "sha512-" + "e" * 64, R1))  # cut: names no digest
    target = [TagEntry("app", fallback(A), R2), TagEntry("app", fallback(B), R2)]
    assert changed_subjects(source, target) == {Image("app", A), Image("app", C)}


IMAGES = [Image("app", d) for d in (A, B, C, D)]


@pytest.mark.parametrize(
    ("cursor", "done", "expected_order", "position", "lap"),
    [
        ("", 2, [A, B, C, D], Image("app", B).key, False),
        ("", 4, [A, B, C, D], "", True),  # the whole registry in one pass: start over
        (Image("app", B).key, 1, [C, D, A, B], Image("app", C).key, False),
        (Image("app", B).key, 2, [C, D, A, B], "", True),  # exactly to the end
        (Image("app", B).key, 3, [C, D, A, B], Image("app", A).key, True),  # wrapped
        (Image("app", B).key, 0, [C, D, A, B], Image("app", B).key, False),  # nothing done
        ("zzz", 1, [A, B, C, D], Image("app", A).key, True),  # past every image: wraps
    ],
    ids=["first-pass", "all-at-once", "goes-on", "reaches-end", "wraps", "none", "beyond"],
)
def test_the_sweep_goes_on_from_its_cursor_and_counts_laps(
    cursor: str, done: int, expected_order: list[str], position: str, lap: bool
) -> None:
    sweep = plan_sweep(list(reversed(IMAGES)), cursor, changed=set())
    assert [i.digest for i in sweep.rolling] == expected_order
    assert advance(sweep, done, cursor) == (position, lap)


def test_passes_of_a_few_images_visit_every_image_once_per_lap() -> None:
    images = [Image(f"repo{n:02d}", A) for n in range(10)]
    cursor, laps = "", 0
    visited: list[Image] = []
    for _ in range(5):  # 3 images a pass: 15 checks, one lap and a half
        sweep = plan_sweep(images, cursor, changed=set())
        visited += sweep.rolling[:3]
        cursor, lap = advance(sweep, 3, cursor)
        laps += lap
    assert visited[:10] == images and visited[10:] == images[:5]
    assert laps == 1 and cursor == images[4].key


def test_changed_images_come_first_and_the_rolling_sweep_skips_over_them() -> None:
    sweep = plan_sweep(IMAGES, "", changed={Image("app", C), Image("other", A)})
    assert sweep.priority == (Image("app", C),)  # an image not in step is not checked
    seen = {Image("app", C)}
    # the rolling part checked A and B, C was checked already: the cursor passes C too
    assert rolled(sweep, seen, 2) == 3
    assert advance(sweep, rolled(sweep, seen, 2), "") == (Image("app", C).key, False)
    assert rolled(sweep, seen, 0) == 0
    assert rolled(sweep, seen, 3) == 4


def desc(digest: object, artifact_type: object = SIG) -> dict[str, object]:
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
            "artifactType": artifact_type}  # fmt: skip


@pytest.mark.parametrize(
    ("source", "target", "delete_extra", "missing", "extra", "both"),
    [
        ([desc(R1), desc(R2, SBOM)], [desc(R1)], False, [(R2, SBOM)], [], [R1]),
        ([desc(R1)], None, False, [(R1, SIG)], [], []),  # DR not listed
        ([desc(R1)], [desc(R1), desc(R3)], False, [], [], [R1]),  # keep: no extras
        ([desc(R1)], [desc(R1), desc(R3)], True, [], [(R3, SIG)], [R1]),
        ([], [desc(R3, None)], True, [], [(R3, None)], []),
        ([desc("sha256:nothex"), desc(7), {"digest": R2}], [], False, [(R2, None)], [], []),
    ],
    ids=["one-missing", "dr-unlisted", "keep", "propagate", "only-in-dr", "hostile-entries"],
)
def test_compare_subject(
    source: list[dict[str, object]],
    target: list[dict[str, object]] | None,
    delete_extra: bool,
    missing: list[tuple[str, str | None]],
    extra: list[tuple[str, str | None]],
    both: list[str],
) -> None:
    there = None if target is None else listed_referrers(target)
    drift = compare_subject("app", A, listed_referrers(source), there, delete_extra=delete_extra)
    assert drift.missing == tuple(Referrer("app", A, d, t) for d, t in missing)
    assert drift.extra == tuple(Referrer("app", A, d, t) for d, t in extra)
    assert drift.both == tuple(both)


@pytest.mark.parametrize(
    ("source", "delete_extra", "expected"),
    [([desc(R1)], False, True), ([], False, False), ([], True, True)],
    ids=["source-has-some", "keep-none", "propagate-none"],
)
def test_dr_is_listed_only_where_it_can_matter(
    source: list[object], delete_extra: bool, expected: bool
) -> None:
    assert needs_target(source, delete_extra=delete_extra) is expected


def test_referrer_jobs_push_each_missing_digest_once_and_delete_extras_only_when_deleting() -> None:
    missing = [Referrer("app", A, R1, SIG), Referrer("app", B, R1, SIG), Referrer("app", A, R2)]
    extra = [Referrer("app", A, R3)]
    kept = referrer_jobs(missing, extra, source="s:1", target="t:2", origin="reconcile",
                         delete_extra=False)  # fmt: skip
    assert [(j.action, j.repository, j.digest, j.tag) for j in kept] == [
        (Action.PUSH, "app", R1, None),
        (Action.PUSH, "app", R2, None),
    ]
    assert {(j.source, j.target, j.origin) for j in kept} == {("s:1", "t:2", "reconcile")}
    deleting = referrer_jobs(missing, extra, source="s:1", target="t:2", origin="reconcile",
                             delete_extra=True)  # fmt: skip
    assert [(j.action, j.digest) for j in deleting][-1] == (Action.DELETE, R3)
    assert len({j.job_id for j in deleting}) == 3


def test_referrer_is_the_contracts_r() -> None:
    assert Referrer("app", A, R1, None).to_dict() == {
        "repository": "app",
        "subject": A,
        "digest": R1,
        "artifact_type": None,
    }


@pytest.mark.parametrize(
    ("rate", "minutes", "expected"),
    [(250.0, 10.0, 2500), (None, 10.0, None), (250.0, None, None), (0.01, 10.0, 1)],
    ids=["standard-share", "no-limit", "no-cap", "at-least-one"],
)
def test_pass_budget(rate: float | None, minutes: float | None, expected: int | None) -> None:
    assert pass_budget(rate, minutes) == expected


def test_sweep_minutes() -> None:
    assert sweep_minutes(5000, 250.0) == 20.0
    assert sweep_minutes(5000, None) is None


def test_pace_counts_calls_and_stops_at_the_pass_budget_without_waiting() -> None:
    """The pass's bound is a count of calls (minutes of the rate the budget pacer spends
    referrers calls at); pacing is the registry client's, so ``Pace`` never waits."""
    source, target, other = "src.azurecr.io", "127.0.0.1:5002", "127.0.0.1:5003"
    settings = Settings(
        source=source,
        targets=(Target(target), Target(other), Target("dr.example")),
        rate_limits={target: Limits(referrers=60.0), "dr.example": Limits(read=100.0)},
    )
    pace = Pace(settings, minutes=0.5)
    assert pace.rate(source) == 250.0  # Standard: 500 a minute times 0.5, capped at 250
    assert pace.rate(target) == 60.0 and pace.rate(other) is None
    assert pace.rate("dr.example") == 100.0  # no referrers limit: drawn from read
    assert (pace.bound(source), pace.bound(target), pace.bound(other)) == (125, 30, None)
    for _ in range(29):
        pace.call(target)
    assert not pace.exhausted([target])
    pace.call(target)
    assert pace.exhausted([target, other])  # 30 calls: half a minute at 60
    for _ in range(1000):
        pace.call(other)  # no limit: never spent
    assert not pace.exhausted([other])
    assert pace.requests == 1030


@pytest.mark.parametrize(
    ("source", "rate_limits", "expected"),
    [
        ("src.azurecr.io", {}, "about 4 min at src.azurecr.io's 250 referrers calls a minute"),
        ("src.azurecr.io", {"src.azurecr.io": Limits(referrers=200)}, "about 10 min at"),
        ("127.0.0.1:5001", {"127.0.0.1:5001": Limits(referrers=1e6)}, "under a minute at"),
        ("127.0.0.1:5001", {}, "unpaced (127.0.0.1:5001 has no referrers budget"),
    ],
    ids=["acr-standard", "configured-acr", "configured-fast", "no-budget"],
)
def test_diff_says_what_the_referrer_check_would_cost(
    source: str, rate_limits: dict[str, Limits], expected: str
) -> None:
    from replicator.app.reconcile import ReconcileReport, TargetDrift
    from replicator.cli.diff import unchecked_line
    from replicator.domain.planning import Plan

    entries = tuple(TagEntry(f"app{n}", "v1", A) for n in range(1000))
    report = ReconcileReport(
        1000,
        (TargetDrift("dr.azurecr.io", Plan(in_step=1000), entries=entries),),
        source_entries=entries,
    )
    settings = Settings(source=source, targets=(Target("dr.azurecr.io"),), rate_limits=rate_limits)
    line = unchecked_line(settings, report)
    assert line.startswith("acr-replicator: referrers not checked (--referrers: one referrers")
    assert "1000 images in step" in line and expected in line


@pytest.mark.parametrize(
    ("unread", "passed"),
    [
        ([], 0),
        ([False, False, False], 3),
        ([False, True, False], 1),  # the cursor stops before the unread one
        ([True, False, True], 2),  # the first is passed even unread: nothing holds the sweep
        ([True], 1),
        ([False, False, True], 2),
    ],
)
def test_the_cursor_stops_before_an_image_left_unread(unread: list[bool], passed: int) -> None:
    """An image whose referrers could not be read (a transient failure) is read again by
    the next pass: the cursor does not pass it (it passed every checked image before)."""
    assert read_through(unread) == passed
