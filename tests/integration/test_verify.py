"""``verify`` on real registries, both shapes: plain distribution (referrers in the
``sha256-<hex>`` fallback tag) and distribution behind the referrers API double
(``devstack.referrers_api``, as ACR keeps them); the main cases on the four pairs
(API -> API, fallback -> fallback and the mixed ones).

Defects are planted through the registry API (a blob or manifest DELETE) in a copy that
``diff`` calls in step by tags; a corrupt blob is planted in the DR registry's storage
(same length, other bytes), which only ``--deep`` can see.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.localstack import Azurite, LocalStack, Registry
from devstack.localworker import drain, worker_runtime
from devstack.referrers_api import start_referrers_registry
from devstack.testimages import PushedImage, push_test_image
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.registries import Registries
from replicator.app.reconcile import run_reconcile
from replicator.app.verify import FileCursor, VerifyOptions, verify
from replicator.cli import main
from replicator.domain.filters import Filters
from replicator.domain.reference import ImageRef

pytestmark = pytest.mark.integration

REPOS = ("team/app0", "team/app1", "team/app2", "team/app3", "other/tool")
EVERY_PAIR = ["fallback", "api", "fallback-api", "api-fallback"]  # source-target shapes
FINDING_KEYS = {
    "kind",
    "repository",
    "digest",
    "tag",
    "parent",
    "image",
    "artifact_type",
    "target_digest",
    "reason",
}


@dataclass
class Copied:
    source: Registry
    target: Registry
    images: dict[str, PushedImage]  # repository -> what was pushed (tag v1)
    registries: Registries

    @property
    def args(self) -> list[str]:
        return ["--source", self.source.host, "--target", self.target.host]


def _start(stack: LocalStack, shape: str) -> Registry:
    return (
        start_referrers_registry(stack, page_size=2) if shape == "api" else stack.start_registry()
    )


@pytest.fixture(params=["fallback", "api"])
def copied(
    request: pytest.FixtureRequest, stack: LocalStack, registries: Registries
) -> Iterator[Copied]:
    """Five images (two platforms, two referrers each) copied whole to DR; the shapes of
    the source and target (``fallback``: a plain registry, ``api``: the referrers API),
    one for both or ``source-target``."""
    shapes = str(request.param).split("-")
    source, target = _start(stack, shapes[0]), _start(stack, shapes[-1])
    try:
        images = {r: push_test_image(registries, ImageRef(source.host, r, "v1")) for r in REPOS}
        copier = ImageCopier(registries)
        for repo in REPOS:
            copier.copy_image(ImageRef(source.host, repo, "v1"), ImageRef(target.host, repo, "v1"))
        yield Copied(source, target, images, registries)
    finally:
        source.stop()
        target.stop()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def found(report: dict[str, Any], kind: str = "missing") -> set[tuple[str, str, str]]:
    return {(f["kind"], f["repository"], f["digest"]) for f in report[kind]}


def delete_blob(copied: Copied, repository: str, digest: str) -> None:
    client = copied.registries.client(copied.target.host)
    response = client.request("DELETE", f"/v2/{repository}/blobs/{digest}")
    assert response.status_code == 202, response.status_code


def delete_manifest(copied: Copied, repository: str, digest: str) -> None:
    ref = ImageRef(copied.target.host, repository, digest=digest)
    copied.registries.client(copied.target.host).delete_manifest(ref)


def blob_file(registry: Registry, digest: str) -> Path:
    """Where distribution's filesystem driver keeps a blob's bytes."""
    hex_ = digest.partition(":")[2]
    root = registry.service.workdir / "data" / "docker" / "registry" / "v2"
    return root / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


@pytest.mark.parametrize("copied", EVERY_PAIR, indirect=True)
def test_a_complete_copy_is_proven(copied: Copied, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, "verify", *copied.args, "--json")
    assert code == 0, report
    assert (report["missing"], report["stale"], report["unreadable"]) == ([], [], [])
    assert report["verdict"] == "proven"
    checked = report["checked"]
    # per image: index + 2 platforms + 2 referrers; config and 2 layers per platform, and
    # each referrer's layer plus the empty config they share
    assert checked == {
        "tags": 5,
        "images": 5,
        "manifests": 25,
        "blobs": 5 * 9,
        "referrers": 10,
        "deep_blobs": 0,
        "deep_bytes": 0,
    }


@pytest.mark.parametrize("copied", EVERY_PAIR, indirect=True)
def test_planted_defects_are_found_where_diff_sees_none(
    copied: Copied, capsys: pytest.CaptureFixture[str]
) -> None:
    layer = copied.images["team/app0"].blobs[1]  # first platform's first layer
    child = copied.images["team/app1"].manifests[1]  # second platform (no referrer)
    referrer = copied.images["team/app2"].referrer_digests[0]  # the index's SBOM
    delete_blob(copied, "team/app0", layer)
    delete_manifest(copied, "team/app1", child)
    delete_manifest(copied, "team/app2", referrer)

    code, drift = run_json(capsys, "diff", *copied.args, "--json")
    assert (code, drift["missing"], drift["stale"]) == (0, [], [])  # in step by tags

    code, report = run_json(capsys, "verify", *copied.args, "--json")
    assert code == 1
    assert found(report) == {
        ("blob", "team/app0", layer),
        ("manifest", "team/app1", child),
        ("referrer", "team/app2", referrer),
    }
    by_kind = {f["kind"]: f for f in report["missing"]}
    assert by_kind["blob"]["image"] == copied.images["team/app0"].digest
    assert by_kind["blob"]["parent"] == copied.images["team/app0"].manifests[0]
    assert by_kind["manifest"]["parent"] == copied.images["team/app1"].digest
    assert by_kind["referrer"]["parent"] == copied.images["team/app2"].digest
    assert by_kind["referrer"]["artifact_type"] == "application/vnd.example.sbom.v1+json"
    assert (report["stale"], report["unreadable"], report["verdict"]) == ([], [], "missing")


def test_missing_and_stale_tags(copied: Copied, capsys: pytest.CaptureFixture[str]) -> None:
    registries = copied.registries
    moved = push_test_image(registries, ImageRef(copied.source.host, "team/app3", "v1"))
    push_test_image(registries, ImageRef(copied.source.host, "team/new", "v1"), referrers=False)
    code, report = run_json(capsys, "verify", *copied.args, "--exclude", "other/**", "--json")
    assert code == 1
    assert {(f["repository"], f["tag"]) for f in report["missing"]} == {("team/new", "v1")}
    (stale,) = report["stale"]
    assert (stale["repository"], stale["digest"]) == ("team/app3", moved.digest)
    assert stale["target_digest"] == copied.images["team/app3"].digest
    assert report["checked"]["tags"] == 5  # 4 in team/, other/tool excluded


def test_json_schema(copied: Copied, capsys: pytest.CaptureFixture[str]) -> None:
    delete_blob(copied, "team/app0", copied.images["team/app0"].blobs[0])
    code, report = run_json(capsys, "verify", *copied.args, "--json", "--deep", "--seed", "1")
    assert code == 1
    assert set(report) == {"missing", "stale", "unreadable", "checked", "verdict"}
    for kind in ("missing", "stale", "unreadable"):
        assert isinstance(report[kind], list)
        for entry in report[kind]:
            assert set(entry) == FINDING_KEYS
            assert all(v is None or isinstance(v, str) for v in entry.values())
    assert set(report["checked"]) == {
        "tags",
        "images",
        "manifests",
        "blobs",
        "referrers",
        "deep_blobs",
        "deep_bytes",
    }
    assert all(isinstance(v, int) for v in report["checked"].values())
    assert report["checked"]["deep_blobs"] == 10  # the default sample
    assert report["verdict"] in {"proven", "missing", "unknown"}


def test_deep_finds_a_corrupt_blob_that_head_cannot(
    copied: Copied, capsys: pytest.CaptureFixture[str]
) -> None:
    layer = copied.images["team/app1"].blobs[2]
    path = blob_file(copied.target, layer)
    data = path.read_bytes()
    path.write_bytes(bytes(b ^ 0xFF for b in data))  # same length, other bytes

    code, shallow = run_json(capsys, "verify", *copied.args, "--json")
    assert (code, shallow["missing"]) == (0, [])

    code, deep = run_json(
        capsys, "verify", *copied.args, "--json", "--deep", "--sample", "1000", "--seed", "7"
    )
    assert code == 1
    assert found(deep) == {("blob", "team/app1", layer)}
    assert deep["missing"][0]["reason"].startswith("corrupt")
    assert deep["checked"]["deep_blobs"] == 5 * 9  # every blob was sampled and read


class _StopAfter:
    """A progress display that interrupts the audit (as Ctrl-C would) after ``n`` images."""

    def __init__(self, n: int | None = None) -> None:
        self.n, self.total, self.done = n, 0, 0

    def grow(self, n: int = 0, nbytes: int = 0) -> None:
        self.total += n

    def advance(self, n: int = 1, *, nbytes: int = 0) -> None:
        self.done += n
        if self.n is not None and self.done >= self.n:
            raise KeyboardInterrupt


@pytest.mark.parametrize("copied", ["fallback"], indirect=True)
def test_resume_goes_on_where_an_interrupted_audit_stopped(
    copied: Copied, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, later = sorted(REPOS)[:2]  # "other/tool", "team/app0": walked before the stop
    delete_blob(copied, first, copied.images[first].blobs[0])
    cursor = tmp_path / "verify.cursor"
    hosts = (copied.source.host, copied.target.host)
    stop = _StopAfter(2)
    with pytest.raises(KeyboardInterrupt):
        verify(copied.registries, *hosts, Filters(), store=FileCursor(cursor), tally=stop)
    saved = json.loads(cursor.read_text())
    assert saved["after"] == [later, copied.images[later].digest]
    assert stop.total == 5

    # planted after that image was audited: a run that went on from the cursor misses it
    delete_blob(copied, later, copied.images[later].blobs[0])
    code, report = run_json(capsys, "verify", *copied.args, "--resume", str(cursor), "--json")
    assert code == 1
    assert found(report) == {("blob", first, copied.images[first].blobs[0])}  # from run one
    assert report["checked"]["images"] == 5
    assert not cursor.exists()  # finished: the cursor is gone

    again = _StopAfter()
    store = FileCursor(cursor)
    done = verify(copied.registries, *hosts, Filters(), VerifyOptions(), store=store, tally=again)
    assert again.total == 5  # a new audit starts over
    assert {f.digest for f in done.findings.missing} == {
        copied.images[first].blobs[0],
        copied.images[later].blobs[0],
    }


@pytest.mark.parametrize("copied", ["fallback"], indirect=True)
def test_resume_refuses_a_cursor_of_another_audit(
    copied: Copied, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cursor = tmp_path / "c.json"
    hosts = (copied.source.host, copied.target.host)
    with pytest.raises(KeyboardInterrupt):
        verify(copied.registries, *hosts, Filters(), store=FileCursor(cursor), tally=_StopAfter(1))
    code = main(["verify", *copied.args, "--deep", "--resume", str(cursor)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "another audit" in err
    assert cursor.exists()  # left as it was


def test_the_reconcile_sweep_audits_a_slice_a_pass_and_its_jobs_repair_a_child(
    stack: LocalStack,
    fresh_azurite: Azurite,
    registries: Registries,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = stack.start_registry(), stack.start_registry()
    repos = ("team/app0", "team/app1", "team/app2")
    images = {r: push_test_image(registries, ImageRef(source.host, r, "v1")) for r in repos}
    for repo in repos:
        ImageCopier(registries).copy_image(
            ImageRef(source.host, repo, "v1"), ImageRef(target.host, repo, "v1")
        )
    copied = Copied(source, target, images, registries)
    child = images["team/app1"].manifests[1]
    layer = images["team/app2"].blobs[1]
    delete_manifest(copied, "team/app1", child)
    delete_blob(copied, "team/app2", layer)

    with worker_runtime(source, target, fresh_azurite, REPLICATOR_VERIFY_SWEEP="2") as (rt, _):
        first = run_reconcile(rt)
        (audit,) = first.verify
        assert (audit.images, audit.checked, audit.cursor and audit.cursor.laps) == (3, 2, 0)
        assert audit.cursor and audit.cursor.position == f"team/app1@{images['team/app1'].digest}"
        assert {(f.kind, f.digest) for f in audit.findings.missing} == {("manifest", child)}
        repairs = [j for j in first.jobs if j.digest == child]
        assert [(j.repository, j.tag, j.action.value) for j in repairs] == [
            ("team/app1", None, "push")
        ]
        assert first.drift()[target.host]["missing"] == 1  # fed to drift_tags and status

        second = run_reconcile(rt)  # team/app2, then round to team/app0: a lap
        (audit,) = second.verify
        assert audit.cursor and (audit.cursor.laps, audit.checked) == (1, 2)
        assert audit.cursor.position == f"team/app0@{images['team/app0'].digest}"
        assert {(f.kind, f.digest) for f in audit.findings.missing} == {("blob", layer)}
        parent = images["team/app2"].manifests[0]  # the platform manifest naming the layer
        fixes = [(j.digest, j.repair) for j in second.jobs if j.repository == "team/app2"]
        assert fixes == [(parent, True)]
        assert second.drift()[target.host]["missing"] == 1
        drain(rt)  # the worker runs the repair jobs

    code, report = run_json(capsys, "verify", *copied.args, "--json")
    assert (code, found(report)) == (0, set())  # the child and the layer are back
    source.stop()
    target.stop()


@pytest.mark.parametrize("copied", ["fallback"], indirect=True)
def test_resume_goes_on_in_the_deep_reads(copied: Copied, tmp_path: Path) -> None:
    cursor = tmp_path / "deep.cursor"
    hosts = (copied.source.host, copied.target.host)
    options = VerifyOptions(deep=True, sample=10, seed=5)
    stop = _StopAfter(len(REPOS) + 3)  # every image, then three blobs read whole
    with pytest.raises(KeyboardInterrupt):
        verify(copied.registries, *hosts, Filters(), options, store=FileCursor(cursor), tally=stop)
    saved = json.loads(cursor.read_text())
    assert (saved["deep_done"], len(saved["sample"])) == (3, 10)

    again = _StopAfter()
    store = FileCursor(cursor)
    report = verify(copied.registries, *hosts, Filters(), options, store=store, tally=again)
    assert again.total == 7  # no image walked again, the seven blobs left read
    assert (report.checked.images, report.checked.deep_blobs) == (5, 10)
    assert report.verdict.value == "proven"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("copied", ["fallback"], indirect=True)
def test_a_terminal_gets_the_progress_line(
    copied: Copied, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["verify", *copied.args]) == 0
    drawn = terminal.getvalue()
    assert "\r[" in drawn and "5/5 images" in drawn
    assert "\r" not in capsys.readouterr().out  # the report on stdout carries none
