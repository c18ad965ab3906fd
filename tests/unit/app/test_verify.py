"""verify's decisions (replicator.domain.integrity, replicator.app.verify and
replicator.app.verify_sweep, the CLI's arguments): tables of cases, and the walk of one
image against a scripted registry (httpx.MockTransport) for what a real one cannot be
made to answer (a 403, a manifest whose bytes do not hash to its digest)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from replicator.adapters.azure.cursors import Cursor as SweepCursor
from replicator.adapters.budget_pacer import BudgetPacer
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.app.image_audit import Auditor
from replicator.app.reconcile import ReconcileReport, TargetDrift
from replicator.app.verify import CursorMismatch, FileCursor, VerifyOptions, scope_of, verify
from replicator.app.verify_sweep import TargetVerify, _target_pass, position_of, repair_jobs
from replicator.cli import build_parser, main
from replicator.cli.verify import EXITS, paced_registries, settings_from
from replicator.domain.config import load_settings, parse_verify_sweep
from replicator.domain.errors import ConfigError, DeferRequested
from replicator.domain.filters import Filters
from replicator.domain.integrity import (
    BlobRef,
    Checked,
    Cursor,
    Finding,
    Findings,
    Image,
    Sample,
    Verdict,
    VerifyReport,
    check_tags,
    remaining,
    sweep_slice,
)
from replicator.domain.manifests import OCI_INDEX, OCI_MANIFEST, sha256_digest
from replicator.domain.model import TagEntry, utcnow
from replicator.domain.planning import DriftEntry, Plan
from tests.fakes import FakeCursors

A, B, C = ("sha256:" + c * 64 for c in "abc")
SRC, DST = "src.example", "dst.example"


def fallback(digest: str) -> str:
    return digest.replace(":", "-")


# -- the tag check ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "target", "filters", "images", "missing", "stale", "unreadable", "tags"),
    [
        ([("r", "t", A)], [("r", "t", A)], Filters(), [("r", A, ("t",))], [], [], [], 1),
        ([("r", "t", A)], [], Filters(), [], [("r", "t")], [], [], 1),
        ([("r", "t", A)], [("r", "t", B)], Filters(), [], [], [("r", "t")], [], 1),
        ([("r", "t", None)], [("r", "t", A)], Filters(), [], [], [], [("r", "t")], 1),
        (  # two tags on one digest: one image to walk
            [("r", "a", A), ("r", "b", A)],
            [("r", "a", A), ("r", "b", A)],
            Filters(),
            [("r", A, ("a", "b"))],
            [],
            [],
            [],
            2,
        ),
        ([("r", fallback(A), B)], [], Filters(), [], [], [], [], 0),  # a referrers index
        ([("r", "t", A)], [], Filters(exclude=("r",)), [], [], [], [], 0),
        ([("r", "t", A)], [("r", "t", B)], Filters(include=("x/**",)), [], [], [], [], 0),
    ],
    ids=[
        "in-step",
        "missing",
        "stale",
        "no-digest",
        "two-tags-one-image",
        "fallback-tag-skipped",
        "excluded",
        "not-included",
    ],
)
def test_check_tags(
    source: list[tuple[str, str, str | None]],
    target: list[tuple[str, str, str | None]],
    filters: Filters,
    images: list[tuple[str, str, tuple[str, ...]]],
    missing: list[tuple[str, str]],
    stale: list[tuple[str, str]],
    unreadable: list[tuple[str, str]],
    tags: int,
) -> None:
    check = check_tags([TagEntry(*e) for e in source], [TagEntry(*e) for e in target], filters)
    assert [(i.repository, i.digest, i.tags) for i in check.images] == images
    assert [(f.repository, f.tag) for f in check.findings.missing] == missing
    assert [(f.repository, f.tag) for f in check.findings.stale] == stale
    assert [(f.repository, f.tag) for f in check.findings.unreadable] == unreadable
    assert check.tags == tags


def test_unread_repositories_are_unreadable_not_missing() -> None:
    source = [TagEntry("r", "t", A), TagEntry("q", "t", A)]
    check = check_tags(source, [], Filters(), target_unread={"r": "dst/r: HTTP 500"})
    assert [(f.kind, f.repository, f.reason) for f in check.findings.unreadable] == [
        ("repository", "r", "dst/r: HTTP 500")
    ]
    assert [f.repository for f in check.findings.missing] == ["q"]


def test_an_unread_catalog_tells_nothing_missing() -> None:
    check = check_tags([TagEntry("r", "t", A)], [], Filters(), target_unread={"": "no catalog"})
    assert (check.images, check.findings.missing, check.tags) == ((), (), 0)
    assert [f.reason for f in check.findings.unreadable] == ["no catalog"]


# -- the verdict and its exit code ------------------------------------------------------------
MISSING = Finding("blob", "r", A)
STALE = Finding("tag", "r", A, "t", target_digest=B)
UNREAD = Finding("manifest", "r", A, reason="HTTP 403")


@pytest.mark.parametrize(
    ("findings", "verdict", "code"),
    [
        (Findings(), Verdict.PROVEN, 0),
        (Findings(missing=(MISSING,)), Verdict.MISSING, 1),
        (Findings(stale=(STALE,)), Verdict.MISSING, 1),
        (Findings(unreadable=(UNREAD,)), Verdict.UNKNOWN, 2),
        (Findings(missing=(MISSING,), unreadable=(UNREAD,)), Verdict.MISSING, 1),
    ],
    ids=["all-proven", "missing", "stale", "unreadable", "missing-beats-unknown"],
)
def test_verdict(findings: Findings, verdict: Verdict, code: int) -> None:
    report = VerifyReport(findings, Checked())
    assert report.verdict is verdict
    assert EXITS[report.verdict] == code
    assert report.to_dict()["verdict"] == verdict.value


# -- resuming and sweeping --------------------------------------------------------------------
IMAGES = [Image("a", A), Image("a", B), Image("b", A), Image("c", C)]


@pytest.mark.parametrize(
    ("after", "count", "chosen", "cursor"),
    [
        (None, 2, [0, 1], 1),
        (("a", B), 2, [2, 3], 3),
        (("b", A), 3, [3, 0, 1], 1),  # past the end: round to the start
        (("c", C), 2, [0, 1], 1),  # the last one done: start over
        (None, 10, [0, 1, 2, 3], 3),  # fewer images than a pass may take
        (("a", B), 10, [2, 3, 0, 1], 1),  # each at most once a pass
        (("b", "sha256:" + "0" * 64), 1, [2], 2),  # that image is gone: the next one
    ],
    ids=["start", "middle", "wrap", "at-end", "all", "all-once", "gone"],
)
def test_sweep_slice(
    after: tuple[str, str] | None, count: int, chosen: list[int], cursor: int
) -> None:
    picked, moved = sweep_slice(IMAGES, after, count)
    assert picked == [IMAGES[i] for i in chosen]
    assert moved == IMAGES[cursor].key


def test_sweep_slice_of_nothing() -> None:
    assert sweep_slice([], ("a", A), 5) == ([], None)


def test_remaining_after_the_cursor() -> None:
    assert remaining(IMAGES, None) == IMAGES
    assert remaining(IMAGES, ("a", B)) == IMAGES[2:]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", None), (f"team/app@{A}", ("team/app", A)), ("garbage", None)],
    ids=["start", "image", "garbage"],
)
def test_sweep_positions(text: str, expected: tuple[str, str] | None) -> None:
    assert position_of(text) == expected


def test_repair_jobs_copy_missing_manifests_by_digest_and_repair_a_blobs_manifest() -> None:
    findings = [
        Finding("manifest", "r", A, parent=B, image=B),
        Finding("referrer", "r", C, parent=B, image=B),
        Finding("manifest", "r", A, parent=C, image=C),  # the same manifest twice: one job
        Finding("blob", "r", B, parent=A, image=B),  # a blob of A, which DR holds: repair A
        Finding("blob", "r", C, parent=A, image=B),  # another blob of A: the same job
    ]
    jobs = repair_jobs(findings, source=SRC, target=DST)
    assert [(j.repository, j.digest, j.tag, j.origin, j.repair) for j in jobs] == [
        ("r", A, None, "reconcile", False),
        ("r", C, None, "reconcile", False),
        ("r", A, None, "reconcile", True),
    ]


def test_the_sample_is_bounded_seeded_and_spread() -> None:
    def sampled(seed: int) -> list[str]:
        sample = Sample(5, seed)
        for i in range(1000):
            sample.offer(BlobRef("r", f"sha256:{i:064x}"))
        assert (sample.seen, len(sample.items)) == (1000, 5)
        return [b.digest for b in sample.items]

    assert sampled(1) == sampled(1)
    assert sampled(1) != sampled(2)
    assert any(int(d.partition(":")[2], 16) >= 5 for d in sampled(1))  # not just the first five


def test_a_resumed_sample_goes_on_from_what_it_kept() -> None:
    kept = [BlobRef("r", A), BlobRef("r", B)]
    sample = Sample(2, 1, seen=2, items=list(kept))
    sample.offer(BlobRef("r", C))
    assert sample.seen == 3 and len(sample.items) == 2


# -- the cursor -------------------------------------------------------------------------------
def cursor() -> Cursor:
    return Cursor(
        scope={"source": SRC, "target": DST},
        after=("r", A),
        findings=Findings(missing=(MISSING,), unreadable=(UNREAD,)),
        checked=Checked(images=3, blobs=7),
        sample_seen=7,
        sample=(BlobRef("r", B, 10, A),),
        deep_done=0,
    )


def test_a_cursor_round_trips() -> None:
    saved = json.loads(json.dumps(cursor().to_dict()))
    assert Cursor.from_dict(saved) == cursor()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"version": 2}, "version 1"),
        ({"after": ["r"]}, "after is"),
        ({"sample": [["r", B, "10", A]]}, "sample is"),
        ({"sample_seen": -1}, "are counts"),
        ({"scope": []}, "scope is"),
        ({"findings": {"missing": [{"kind": "nonsense", "repository": "r"}]}}, "finding kind"),
        ({"checked": {"images": "3"}}, "integers"),
    ],
    ids=["version", "after", "sample", "negative", "scope", "finding-kind", "counts"],
)
def test_a_cursor_that_is_not_one_is_refused(change: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Cursor.from_dict({**cursor().to_dict(), **change})


def test_the_file_cursor_saves_loads_and_clears(tmp_path: Path) -> None:
    store = FileCursor(tmp_path / "c.json")
    assert store.load() is None
    store.save(cursor())
    assert store.load() == cursor()
    store.clear()
    assert store.load() is None
    store.clear()  # already gone: fine


def test_a_save_cut_short_leaves_the_last_cursor_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileCursor(tmp_path / "c.json")
    store.save(cursor())

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="No space left"):
        store.save(cursor().advance(after=("z", C)))
    monkeypatch.undo()
    assert store.load() == cursor()
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary left behind


def test_a_file_that_is_not_a_cursor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(CursorMismatch, match="not a verify cursor"):
        FileCursor(path).load()


def test_the_scope_names_what_a_cursor_is_for() -> None:
    shallow = scope_of(SRC, DST, Filters(("a/**",)), VerifyOptions())
    deep = scope_of(SRC, DST, Filters(("a/**",)), VerifyOptions(deep=True, seed=3))
    assert shallow != deep
    assert shallow == scope_of(SRC, DST, Filters(("a/**",)), VerifyOptions(sample=99))  # unused


# -- the command line -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--sample", "3"], "--sample needs --deep"),
        (["--deep", "--sample", "0"], "--sample must be at least 1"),
        (["--seed", "3"], "--seed needs --deep"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--include", "bad glob"], "invalid glob"),
        (["--sample", "x"], "invalid int value"),
    ],
    ids=["sample-alone", "sample-zero", "seed-alone", "concurrency", "glob", "not-a-number"],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["verify", "--source", "127.0.0.1:1", "--target", "127.0.0.1:2", *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = int(str(exc.code))
    err = capsys.readouterr().err
    assert code == 2
    assert says in err and err.count("\n") == 1


def test_the_same_registry_twice_and_a_bad_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--source", "a.example", "--target", "a.example"]) == 2
    assert "the same registry" in capsys.readouterr().err
    assert main(["verify", "--source", "bad host", "--target", "a.example"]) == 2
    err = capsys.readouterr().err
    assert "--source" in err and err.count("\n") == 1


def test_a_bad_rate_limit_setting_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATOR_RATE_LIMITS", "{nope")
    assert main(["verify", "--source", "a.example", "--target", "b.example"]) == 2
    err = capsys.readouterr().err
    assert "REPLICATOR_RATE_LIMITS" in err and err.count("\n") == 1


# -- the walk of one image, against a scripted DR ---------------------------------------------
def _manifest(body: dict[str, Any]) -> tuple[str, bytes]:
    data = json.dumps(body).encode()
    return sha256_digest(data), data


CONFIG, LAYER = A, B
IMAGE_DIGEST, IMAGE = _manifest(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": LAYER}],
    }
)
INDEX_DIGEST, INDEX = _manifest(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": IMAGE_DIGEST, "size": len(IMAGE)}],
    }
)


def scripted(answers: dict[str, httpx.Response]) -> Registries:
    """DR answers ``answers`` by path; the source has no referrers; the rest is 404."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == SRC and "/referrers/" in request.url.path:
            return httpx.Response(200, json={"manifests": []}, headers={"Content-Type": OCI_INDEX})
        found = answers.get(request.url.path) if request.url.host == DST else None
        return found if found is not None else httpx.Response(404)

    retry = RetryPolicy(attempts=1, sleep=lambda _: None)
    return Registries(transport=httpx.MockTransport(handler), retry=retry)


def manifest_answer(data: bytes, media_type: str) -> httpx.Response:
    return httpx.Response(200, content=data, headers={"Content-Type": media_type})


@pytest.mark.parametrize(
    ("layer", "image", "missing", "unreadable", "reason"),
    [
        (None, None, [], [], ""),
        (httpx.Response(404), None, [("blob", LAYER)], [], ""),
        (httpx.Response(403), None, [], [("blob", LAYER)], "HTTP 403"),
        (None, httpx.Response(404), [("manifest", IMAGE_DIGEST)], [], ""),
        (  # bytes that do not hash to the digest asked for
            None,
            manifest_answer(b'{"schemaVersion":2,"layers":[]}', OCI_MANIFEST),
            [("manifest", IMAGE_DIGEST)],
            [],
            "corrupt",
        ),
        (None, httpx.Response(403), [], [("manifest", IMAGE_DIGEST)], "HTTP 403"),
    ],
    ids=[
        "present",
        "blob-missing",
        "blob-forbidden",
        "child-missing",
        "child-corrupt",
        "child-forbidden",
    ],
)
def test_what_one_walk_finds(
    layer: httpx.Response | None,
    image: httpx.Response | None,
    missing: list[tuple[str, str]],
    unreadable: list[tuple[str, str]],
    reason: str,
) -> None:
    answers = {
        f"/v2/r/manifests/{INDEX_DIGEST}": manifest_answer(INDEX, OCI_INDEX),
        f"/v2/r/manifests/{IMAGE_DIGEST}": image or manifest_answer(IMAGE, OCI_MANIFEST),
        f"/v2/r/blobs/{CONFIG}": present(),
        f"/v2/r/blobs/{LAYER}": layer or present(),
    }
    with scripted(answers) as registries:
        result = Auditor(registries, SRC, DST).image(Image("r", INDEX_DIGEST, ("v1",)))
    assert [(f.kind, f.digest) for f in result.missing] == missing
    assert [(f.kind, f.digest) for f in result.unreadable] == unreadable
    for finding in [*result.missing, *result.unreadable]:
        assert finding.image == INDEX_DIGEST
        assert reason in finding.reason


def present() -> httpx.Response:
    return httpx.Response(200, headers={"Content-Length": "5"})


def test_a_blob_two_images_share_is_checked_once() -> None:
    other_digest, other = _manifest(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": C},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": LAYER}],
        }
    )
    answers = {
        f"/v2/r/manifests/{IMAGE_DIGEST}": manifest_answer(IMAGE, OCI_MANIFEST),
        f"/v2/r/manifests/{other_digest}": manifest_answer(other, OCI_MANIFEST),
        f"/v2/r/blobs/{CONFIG}": present(),
        f"/v2/r/blobs/{LAYER}": present(),
        f"/v2/r/blobs/{C}": present(),
    }
    with scripted(answers) as registries:
        auditor = Auditor(registries, SRC, DST)
        first = auditor.image(Image("r", IMAGE_DIGEST))
        second = auditor.image(Image("r", other_digest))
    assert (first.blob_heads, second.blob_heads) == (2, 1)  # the shared layer once
    assert [b.digest for b in first.blobs + second.blobs] == [CONFIG, LAYER, C]


# -- the setting, the drift it feeds, the pacing, a deferred pass ------------------------------
@pytest.mark.parametrize(
    ("value", "expected", "problem"),
    [
        ("", None, False),
        ("off", None, False),
        ("OFF", None, False),
        ("500", 500, False),
        ("0", None, True),
        ("-3", None, True),
        ("lots", None, True),
        ("2.5", None, True),
    ],
    ids=["unset", "off", "off-upper", "count", "zero", "negative", "word", "fraction"],
)
def test_the_verify_sweep_setting(value: str, expected: int | None, problem: bool) -> None:
    problems: list[str] = []
    assert parse_verify_sweep(value, problems) == expected
    assert bool(problems) is problem
    assert all("REPLICATOR_VERIFY_SWEEP" in p for p in problems)


def test_load_settings_reads_the_sweep_and_lists_a_bad_one() -> None:
    base = {"REPLICATOR_SOURCE": SRC, "REPLICATOR_TARGETS": DST}
    assert load_settings(base).verify_sweep is None
    assert load_settings({**base, "REPLICATOR_VERIFY_SWEEP": "20"}).verify_sweep == 20
    with pytest.raises(ConfigError, match="REPLICATOR_VERIFY_SWEEP"):
        load_settings({**base, "REPLICATOR_VERIFY_SWEEP": "some"})


def test_sweep_findings_count_as_missing_drift() -> None:
    plan = Plan(missing=(DriftEntry("r", "t", A, None),), in_step=3)
    audit = TargetVerify(DST, images=3, checked=2, findings=Findings(missing=(MISSING, MISSING)))
    unknown = TargetVerify("gone.example", images=0, checked=0, findings=Findings((MISSING,)))
    report = ReconcileReport(
        1,
        (TargetDrift(DST, plan), TargetDrift("gone.example", None)),
        verify=(audit, unknown),
    )
    assert report.drift() == {
        DST: {"missing": 3, "stale": 0, "extra": 0},
        "gone.example": {"missing": -1, "stale": -1, "extra": -1},  # unlisted stays unknown
    }


def test_the_command_is_paced_by_the_budgets() -> None:
    parser = build_parser("verify")
    args = parser.parse_args(["verify", "--source", "127.0.0.1:1", "--target", "127.0.0.1:2"])
    env = {"REPLICATOR_RATE_LIMITS": '{"127.0.0.1:2": {"read": 60, "referrers": 10}}'}
    registries = paced_registries(settings_from(args, env))
    pacer = registries.retry.pacer
    assert isinstance(pacer, BudgetPacer)
    assert registries.retry.defer_after is None  # a command sleeps waits out
    assert (pacer.limits("127.0.0.1:2").read, pacer.limits("127.0.0.1:2").referrers) == (50, 10)
    assert pacer.limits("127.0.0.1:1").read is None  # no budget for it: not paced
    waits = [pacer.before("127.0.0.1:2", "referrers") for _ in range(5)]
    assert waits[-1] > 0 and waits == sorted(waits)  # past the burst, each waits its turn
    registries.close()


class _Deferring:
    """An auditor whose second image meets a wait too long for the timer."""

    def __init__(self) -> None:
        self.target = type("Client", (), {"host": DST})()
        self.walked: list[Image] = []

    def image(self, image: Image) -> Any:
        if len(self.walked) == 1:
            raise DeferRequested("asked to wait 600s", delay_seconds=600)
        self.walked.append(image)
        return type("Result", (), {"findings": lambda self: Findings(missing=(MISSING,))})()


def test_a_deferred_pass_keeps_its_place() -> None:
    cursors = FakeCursors()
    start = SweepCursor("verify|" + DST, f"a@{A}", laps=2)
    done = _target_pass(_Deferring(), IMAGES, start, 3, utcnow())  # type: ignore[arg-type]
    assert (done.checked, done.missing) == (1, 1)
    assert done.stopped is not None and "600s" in done.stopped
    assert done.cursor is not None
    assert (done.cursor.position, done.cursor.laps) == (f"a@{B}", 2)  # the one walked
    cursors.put(done.cursor)
    assert cursors.get("verify|" + DST).counts["checked"] == 1


def test_a_target_whose_catalog_cannot_be_read_leaves_the_answer_unknown() -> None:
    image = httpx.Response(200, headers={"Docker-Content-Digest": A, "Content-Type": OCI_INDEX})
    source = {
        "/v2/_catalog": httpx.Response(200, json={"repositories": ["r"]}),
        "/v2/r/tags/list": httpx.Response(200, json={"name": "r", "tags": ["v1"]}),
        "/v2/r/manifests/v1": image,
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == DST:
            return httpx.Response(403)
        return source.get(request.url.path, httpx.Response(404))

    retry = RetryPolicy(attempts=1, sleep=lambda _: None)
    with Registries(transport=httpx.MockTransport(handler), retry=retry) as registries:
        report = verify(registries, SRC, DST, Filters())
    assert report.verdict is Verdict.UNKNOWN
    assert [(f.kind, f.repository) for f in report.findings.unreadable] == [("repository", "")]
    assert "the catalog" in report.findings.unreadable[0].reason
    assert (report.findings.missing, report.checked.tags) == ((), 0)
