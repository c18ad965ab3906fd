"""Referrer drift end to end: real registries (plain distribution, whose referrers are the
``sha256-<hex>`` fallback tag, and the same behind devstack.referrers_api, which has the
OCI 1.1 referrers API), Azurite's queue and status table, the worker draining the queue.

A signature whose push event was lost is in the source only; reconcile finds it and the
worker brings it; ``diff --referrers`` says so before (exit 1) and not after (exit 0); a
second reconcile enqueues nothing; the sweep's cursor in the status table moves on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from devstack.localstack import Azurite, LocalStack, Registry
from devstack.localworker import drain, worker_runtime
from devstack.referrers_api import ReferrersRegistry, start_referrers_registry
from devstack.testimages import SIGNATURE_TYPE, push_referrer, push_test_image, seed
from replicator.adapters.azure.cursors import TableCursors
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.referrers import list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.app.api import handle_status
from replicator.app.reconcile import run_reconcile
from replicator.app.referrer_drift import Image
from replicator.app.referrer_sweep import CURSOR_PREFIX
from replicator.app.runtime import Runtime
from replicator.cli import main
from replicator.domain.manifests import Manifest
from replicator.domain.model import Action, CopyJob, JobResult, Outcome
from replicator.domain.reference import ImageRef

pytestmark = pytest.mark.integration

SHAPES = ["api-api", "fallback-fallback", "fallback-api", "api-fallback"]


def start(stack: LocalStack, kind: str) -> Registry:
    return start_referrers_registry(stack) if kind == "api" else stack.start_registry()


@pytest.fixture(params=SHAPES)
def pair(request: pytest.FixtureRequest, stack: LocalStack) -> Iterator[tuple[Registry, Registry]]:
    """Source and DR of one shape: ``api`` has the referrers API, ``fallback`` has not."""
    kinds = str(request.param).split("-")
    with ExitStack() as started:
        both = []
        for kind in kinds:
            running = start(stack, kind)
            started.callback(running.stop)
            both.append(running)
        yield both[0], both[1]


def diff(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object], str]:
    code = main(["diff", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def oci(runtime: Runtime) -> Registries:
    """The runtime's OCI engine (the test images and listings take it)."""
    assert isinstance(runtime.registries, Registries)
    return runtime.registries


def listed(runtime: Runtime, host: str, repository: str, subject: str) -> set[str]:
    registries = oci(runtime)
    client = registries.client(host)
    return set(list_referrers(registries, client, repository, subject).digests)


def test_a_signature_whose_event_was_lost_is_found_by_reconcile_and_replicated(
    pair: tuple[Registry, Registry], fresh_azurite: Azurite, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = pair
    with worker_runtime(source, target, fresh_azurite) as (runtime, _):
        ref = ImageRef(source.host, "team/app", "v1")
        image = push_test_image(oci(runtime), ref, layers=1, layer_size=256)
        first = run_reconcile(runtime, sleep=lambda _s: None)  # the image and its referrers
        assert first.enqueued >= 1
        assert drain(runtime).poisoned == 0
        hosts = ("--source", source.host, "--target", target.host)
        code, body, _ = diff(capsys, *hosts, "--referrers")
        assert (code, body["referrers_missing"]) == (0, [])

        # a signature pushed to the source whose event never came: no job
        src = oci(runtime).client(source.host)
        index = src.get_manifest(ref.with_tag(None).with_digest(image.digest))
        assert isinstance(index, Manifest)
        lost = push_referrer(oci(runtime), ref, index, SIGNATURE_TYPE)
        assert lost not in listed(runtime, target.host, "team/app", image.digest)

        code, body, err = diff(capsys, *hosts)
        assert "referrers not checked" in err and "referrers_missing" not in body
        code, body, _ = diff(capsys, *hosts, "--referrers")
        assert code == 1
        assert body["referrers_missing"] == [
            {
                "repository": "team/app",
                "subject": image.digest,
                "digest": lost,
                "artifact_type": SIGNATURE_TYPE,
            }
        ]

        found = run_reconcile(runtime, sleep=lambda _s: None)
        (drift,) = found.referrers
        assert [(r.subject, r.digest) for r in drift.missing] == [(image.digest, lost)]
        pushes = [j for j in found.jobs if j.digest == lost]
        assert [(j.action, j.tag, j.origin) for j in pushes] == [(Action.PUSH, None, "reconcile")]
        assert drain(runtime).poisoned == 0
        assert lost in listed(runtime, target.host, "team/app", image.digest)

        code, body, _ = diff(capsys, *hosts, "--referrers")
        assert (code, body["referrers_missing"]) == (0, [])
        again = run_reconcile(runtime, sleep=lambda _s: None)
        assert (again.enqueued, again.jobs) == (0, ())
        assert [len(r.missing) for r in again.referrers] == [0]
        shown = handle_status(runtime, {}).body["referrers"][target.host]
        assert shown["missing"] == 0 and shown["laps"] == 2  # the two passes with an image
        if isinstance(target, ReferrersRegistry):  # DR with the API gets no fallback tag
            written = [tag for _, tag in target.api.tags_written]
            assert not [t for t in written if t.startswith("sha256-")]


def test_the_sweep_moves_its_cursor_on_across_passes_within_the_budget(
    stack: LocalStack, fresh_azurite: Azurite
) -> None:
    """Twelve images in step; a referrers budget of 5 calls a pass (1 a minute, half of it
    the source's share, 10 minutes a pass): each pass checks part of the registry, the next
    one goes on from the cursor, and the signature on the last image is found when the
    sweep reaches it. Both registries have the referrers API: no fallback tag tells."""
    with ExitStack() as started:
        source = start_referrers_registry(stack)
        started.callback(source.stop)
        target = start_referrers_registry(stack)
        started.callback(target.stop)
        _sweep_in_passes(source, target, fresh_azurite)


def _sweep_in_passes(source: Registry, target: Registry, fresh_azurite: Azurite) -> None:
    env = {"REPLICATOR_RATE_LIMITS": json.dumps({source.host: {"referrers": 1}})}
    with worker_runtime(source, target, fresh_azurite, **env) as (runtime, _):
        keys, _, _, lost = _twelve_and_a_lost_signature(runtime, source, target)
        slept: list[float] = []

        one = run_reconcile(runtime, sleep=slept.append)
        (first,) = one.referrers
        assert 0 < first.checked < 12 and first.stopped is not None
        assert first.cursor is not None and first.cursor.laps == 0
        assert first.cursor.position == keys[first.checked - 1]
        assert first.missing == ()  # the sweep has not reached the last image yet
        assert not slept  # bounded in calls; pacing is the registry client's (none here)

        two = run_reconcile(runtime, sleep=slept.append)
        (second,) = two.referrers
        done = first.checked + second.checked
        assert second.cursor is not None and done >= 12 and second.cursor.laps == 1
        assert second.cursor.position == keys[(done - 1) % 12]
        assert [r.digest for r in second.missing] == [lost]
        assert [j.digest for j in two.jobs] == [lost]

        assert isinstance(runtime.status, TableStatusStore)
        stored = TableCursors.for_status(runtime.status).get(CURSOR_PREFIX + target.host)
        assert stored == second.cursor


def test_an_image_a_job_finished_on_since_the_last_pass_is_checked_first(
    stack: LocalStack, fresh_azurite: Azurite
) -> None:
    """The same budget, but the last image (the one with the lost signature) was replicated
    lately (its row in the status table): the first pass checks it before the sweep."""
    with ExitStack() as started:
        source = start_referrers_registry(stack)
        started.callback(source.stop)
        target = start_referrers_registry(stack)
        started.callback(target.stop)
        env = {"REPLICATOR_RATE_LIMITS": json.dumps({source.host: {"referrers": 1}})}
        with worker_runtime(source, target, fresh_azurite, **env) as (runtime, _):
            keys, last, subject, lost = _twelve_and_a_lost_signature(runtime, source, target)
            job = CopyJob(Action.PUSH, source.host, target.host, last.repository, subject.digest)
            runtime.status.record(JobResult(job.evolve(tag="v1", job_id=""), Outcome.COPIED))

            (first,) = run_reconcile(runtime, sleep=lambda _s: None).referrers
            assert [r.digest for r in first.missing] == [lost]
            assert 1 < first.checked < 12 and first.cursor is not None
            assert first.cursor.position == keys[first.checked - 2]  # the sweep: the rest


def _twelve_and_a_lost_signature(
    runtime: Runtime, source: Registry, target: Registry
) -> tuple[list[str], ImageRef, Manifest, str]:
    """Twelve images in step on both sides; a signature of the last one pushed to the
    source only (its event lost). The images' sweep keys in order, the last image, its
    manifest and the signature's digest."""
    repos = [f"app{n:02d}" for n in range(12)]
    for host in (source.host, target.host):
        seed(oci(runtime), host, [(r, "v1", 1) for r in repos])
    keys = sorted(Image(r, _digest(runtime, source.host, r)).key for r in repos)
    last = ImageRef(source.host, repos[-1], "v1")
    subject = oci(runtime).client(source.host).get_manifest(last)
    return keys, last, subject, push_referrer(oci(runtime), last, subject, SIGNATURE_TYPE)


def _digest(runtime: Runtime, host: str, repository: str) -> str:
    found = oci(runtime).client(host).head_manifest(ImageRef(host, repository, "v1"))
    assert found is not None
    return found.digest


@pytest.mark.parametrize("policy", ["keep", "propagate"])
def test_a_referrer_only_dr_lists_follows_the_delete_policy(
    policy: str, stack: LocalStack, fresh_azurite: Azurite
) -> None:
    """The source deleted a signature DR still holds: ``keep`` leaves it (no job, DR not
    even listed where the source has none); ``propagate`` deletes it, once."""
    with ExitStack() as started:
        source = start_referrers_registry(stack)
        started.callback(source.stop)
        target = start_referrers_registry(stack)
        started.callback(target.stop)
        env = {"REPLICATOR_DELETE_POLICY": policy}
        with worker_runtime(source, target, fresh_azurite, **env) as (runtime, _):
            ref = ImageRef(source.host, "app", "v1")
            seed(oci(runtime), source.host, [("app", "v1", 1)])
            subject = oci(runtime).client(source.host).get_manifest(ref)
            signature = push_referrer(oci(runtime), ref, subject, SIGNATURE_TYPE)
            run_reconcile(runtime, sleep=lambda _s: None)
            assert drain(runtime).poisoned == 0
            assert listed(runtime, target.host, "app", subject.digest) == {signature}

            oci(runtime).client(source.host).delete_manifest(ref.with_digest(signature))
            found = run_reconcile(runtime, sleep=lambda _s: None)
            (drift,) = found.referrers
            assert drift.missing == ()
            if policy == "keep":
                assert (found.enqueued, drift.extra) == (0, ())
                assert listed(runtime, target.host, "app", subject.digest) == {signature}
                return
            assert [r.digest for r in drift.extra] == [signature]
            assert [(j.action, j.digest, j.tag) for j in found.jobs] == [
                (Action.DELETE, signature, None)
            ]
            assert drain(runtime).poisoned == 0
            assert listed(runtime, target.host, "app", subject.digest) == set()
            assert run_reconcile(runtime, sleep=lambda _s: None).enqueued == 0
