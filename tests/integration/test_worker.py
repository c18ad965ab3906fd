"""Push, event, queue, worker, DR copy: end to end on real registries and Azurite."""

from __future__ import annotations

import json

from devstack.demo import compare, push_event
from devstack.localruntime import LocalRuntime
from devstack.localstack import Azurite, Registry
from devstack.localworker import (
    LocalPair,
    delete_event,
    deliver_push,
    drain,
    worker_runtime,
)
from devstack.testimages import push_images, push_test_image
from replicator.domain.model import CopyJob, utcnow
from replicator.domain.reference import ImageRef
from replicator.functions import triggers

INDEX = "application/vnd.oci.image.index.v1+json"


def _outcome(runtime: LocalRuntime, ref: ImageRef) -> str:
    (row,) = runtime.status.images(ref.repository, ref.tag)
    return str(row["outcome"])


def test_push_replicates_identically(local: LocalPair) -> None:
    source, target = local.source, local.target
    with local.worker() as (runtime, counting):
        ref = ImageRef(source.host, "team/app", "v1")
        pushed = push_test_image(runtime.registries, ref)
        deliver_push(ref, pushed.digest)
        stats = drain(runtime)
        assert stats.succeeded == 1 and stats.poisoned == 0
        assert all(
            c.identical
            for c in compare(
                runtime.registries,
                ref.with_digest(pushed.digest),
                ImageRef(target.host, "team/app", "v1", pushed.digest),
                pushed.referrer_digests,
            )
        )
        (row,) = runtime.status.images("team/app", "v1")
        assert row["outcome"] == "copied" and row["strategy"] == "copy"
        assert row["digest"] == pushed.digest
        lag = row["lagSeconds"]
        assert isinstance(lag, int | float) and lag >= 0
        assert counting.copies == [f"team/app@{pushed.digest}->{target.host}"]


def test_same_event_five_times_is_one_copy(local: LocalPair) -> None:
    source = local.source
    with local.worker() as (runtime, counting):
        ref = ImageRef(source.host, "team/app", "v1")
        pushed = push_test_image(runtime.registries, ref)
        event = push_event(ref, pushed.digest, INDEX, pushed.size, utcnow())
        for _ in range(5):
            triggers.on_registry_event(event)
        drain(runtime)
        assert len(counting.copies) == 1
        assert _outcome(runtime, ref) == "copied"


def test_out_of_order_events_end_at_the_newest_digest(local: LocalPair) -> None:
    source, target = local.source, local.target
    with local.worker() as (runtime, _):
        ref = ImageRef(source.host, "team/app", "stable")
        old = push_test_image(runtime.registries, ref)
        old_event = push_event(ref, old.digest, INDEX, old.size, utcnow())
        new = push_test_image(runtime.registries, ref)
        new_event = push_event(ref, new.digest, INDEX, new.size, utcnow())
        triggers.on_registry_event(new_event)
        drain(runtime)
        triggers.on_registry_event(old_event)  # the late, older event
        drain(runtime)
        dst = runtime.registries.client(target.host).head_manifest(
            ImageRef(target.host, "team/app", "stable")
        )
        assert dst is not None and dst.digest == new.digest
        assert _outcome(runtime, ref) in {"already_present", "copied"}


def _pushed_and_deleted(runtime: LocalRuntime, source: Registry, target: Registry) -> ImageRef:
    ref = ImageRef(source.host, "team/gone", "v1")
    pushed = push_test_image(runtime.registries, ref, referrers=False)
    deliver_push(ref, pushed.digest)
    drain(runtime)
    runtime.registries.client(source.host).delete_manifest(ref.with_digest(pushed.digest))
    triggers.on_registry_event(delete_event(ref, pushed.digest))
    return ImageRef(target.host, "team/gone", None, pushed.digest)


def test_delete_is_kept_by_default(local: LocalPair) -> None:
    source, target = local.source, local.target
    with local.worker() as (runtime, _):
        dst = _pushed_and_deleted(runtime, source, target)
        drain(runtime)
        assert runtime.registries.client(target.host).head_manifest(dst) is not None
        rows = runtime.status.images("team/gone")
        assert "delete_kept" in {r["outcome"] for r in rows}


def test_delete_propagates_when_configured(local: LocalPair) -> None:
    source, target = local.source, local.target
    with local.worker(REPLICATOR_DELETE_POLICY="propagate") as (
        runtime,
        _,
    ):
        dst = _pushed_and_deleted(runtime, source, target)
        drain(runtime)
        assert runtime.registries.client(target.host).head_manifest(dst) is None


def test_delete_is_skipped_when_the_source_has_it_again(local: LocalPair) -> None:
    source, target = local.source, local.target
    with local.worker(REPLICATOR_DELETE_POLICY="propagate") as (
        runtime,
        _,
    ):
        ref = ImageRef(source.host, "team/back", "v1")
        pushed = push_test_image(runtime.registries, ref, referrers=False)
        deliver_push(ref, pushed.digest)
        drain(runtime)
        # A delete event arrives, but the source holds the digest (re-pushed meanwhile).
        triggers.on_registry_event(delete_event(ref, pushed.digest))
        drain(runtime)
        dst = ImageRef(target.host, "team/back", None, pushed.digest)
        assert runtime.registries.client(target.host).head_manifest(dst) is not None
        assert "delete_skipped" in {r["outcome"] for r in runtime.status.images("team/back")}


def test_delete_after_a_grace_period(local: LocalPair) -> None:
    source, target = local.source, local.target
    with local.worker(REPLICATOR_DELETE_POLICY="propagate-after:2s") as (runtime, _):
        dst = _pushed_and_deleted(runtime, source, target)
        runner_stats = drain(runtime, timeout=30)  # defers, waits out the delay, then deletes
        assert runner_stats.poisoned == 0
        assert runtime.registries.client(target.host).head_manifest(dst) is None
        outcomes = {r["outcome"] for r in runtime.status.images("team/gone")}
        assert "deleted" in outcomes


def test_malformed_message_goes_to_poison_with_its_reason(local: LocalPair) -> None:
    with local.worker() as (runtime, counting):
        runtime.queue.send_text('{"version": 1, "action": "push"}')
        stats = drain(runtime)
        assert stats.succeeded == 1 and stats.failed_attempts == 0  # no retries for garbage
        (message,) = runtime.queue.client(runtime.queue.poison_name).peek_messages()
        envelope = json.loads(message.content)
        assert "missing or non-string field 'source'" in envelope["poison_reason"]
        assert json.loads(envelope["message"]) == {"version": 1, "action": "push"}
        assert counting.copies == []


def test_unreachable_target_retries_then_poisons(local: LocalPair) -> None:
    source, target = local.source, local.target
    with local.worker() as (runtime, _):
        ref = ImageRef(source.host, "team/app", "v1")
        pushed = push_test_image(runtime.registries, ref, referrers=False)
        target.stop()
        deliver_push(ref, pushed.digest)
        stats = drain(runtime, timeout=120)
        assert stats.poisoned == 1 and stats.failed_attempts == 3
        (row,) = runtime.status.images("team/app", "v1")
        assert row["outcome"] == "retrying" and row["attempts"] == 3 and row["lastError"]
        (message,) = runtime.queue.client(runtime.queue.poison_name).peek_messages()
        assert CopyJob.from_json(message.content).digest == pushed.digest


def test_burst_of_pushes_every_image_once(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> None:
    source, target = registry_pair
    with worker_runtime(source, target, fresh_azurite) as (runtime, counting):
        pushed = {
            ref: image.digest
            for ref, image in push_images(
                runtime.registries,
                source.host,
                200,
                repos=20,
                prefix="burst",
                platforms=("linux/amd64",),
                layer_size=256,
                referrers=False,
            ).items()
        }
        for ref, digest in pushed.items():
            deliver_push(ref, digest)
        stats = drain(runtime, timeout=300)
        assert stats.poisoned == 0
        client = runtime.registries.client(target.host)
        for ref, digest in pushed.items():
            found = client.head_manifest(ref.with_registry(target.host))
            assert found is not None and found.digest == digest, ref
        assert len(counting.copies) == len(set(counting.copies)) == 200
