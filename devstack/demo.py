"""``acr-replicator demo``: the whole flow on a local stack, end to end.

Two distribution registries (source and DR) and Azurite start on loopback. A
multi-platform image (linux/amd64 + linux/arm64, OCI index, with a signature-like
referrer) is pushed to the source; the Event Grid event that push raises is delivered to
``on_registry_event``; the local queue runner (honouring host.json) drives ``replicate``
until the queue is empty; then the DR copy is checked manifest for manifest, byte for byte.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import azure.functions as func

from devstack.localrun import runner_for
from devstack.localruntime import LocalRuntime, serving
from devstack.localstack import LocalStack
from devstack.testimages import push_test_image
from replicator.adapters.oci.registries import Registries
from replicator.domain.config import StorageConnection, load_settings
from replicator.domain.manifests import blobs_of, children_of
from replicator.domain.model import PLANS_QUEUE, utcnow
from replicator.domain.reference import ImageRef
from replicator.functions import triggers

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
LOCAL_TOPIC = "/local/registries/source"


@dataclass(frozen=True)
class Check:
    what: str
    identical: bool


def push_event(
    ref: ImageRef,
    digest: str,
    media_type: str,
    size: int,
    when: datetime,
    *,
    topic: str = LOCAL_TOPIC,
) -> func.EventGridEvent:
    """The Event Grid event ACR raises for a push (reference section 1, Event Grid schema);
    ``topic``: the system topic's, in Azure the source registry's resource id."""
    event_id = str(uuid.uuid4())
    data: dict[str, object] = {
        "id": event_id,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "action": "push",
        "location": "local",
        "target": {
            "mediaType": media_type,
            "size": size,
            "length": size,
            "digest": digest,
            "repository": ref.repository,
            "tag": ref.tag,
        },
        "request": {
            "id": str(uuid.uuid4()),
            "host": ref.registry,
            "method": "PUT",
            "useragent": "acr-replicator-demo",
        },
    }
    return func.EventGridEvent(
        id=event_id,
        data=data,
        topic=topic,
        subject=f"{ref.repository}:{ref.tag}",
        event_type="Microsoft.ContainerRegistry.ImagePushed",
        event_time=when,
        data_version="2.0",
    )


def compare(
    registries: Registries, src: ImageRef, dst: ImageRef, referrers: tuple[str, ...] = ()
) -> list[Check]:
    """Every manifest of the image (and of the given referrers), and every blob they name,
    the same bytes in both registries; and the tag at the source digest."""
    checks: list[Check] = []
    pending = [src.digest or src.reference, *referrers]
    seen: set[str] = set()
    while pending:
        digest = pending.pop()
        if digest in seen:
            continue
        seen.add(digest)
        a = registries.client(src.registry).get_manifest(src.with_digest(digest).with_tag(None))
        b = registries.client(dst.registry).get_manifest(dst.with_digest(digest).with_tag(None))
        checks.append(Check(f"manifest {digest[:19]}", a.content == b.content))
        pending.extend(children_of(a))
        for blob in blobs_of(a):
            there = registries.client(dst.registry).head_blob(dst.repository, blob)
            checks.append(Check(f"blob {blob[:19]}", there is not None))
    tagged = registries.client(dst.registry).head_manifest(dst.with_digest(None))
    checks.append(Check(f"tag {dst.tag}", tagged is not None and tagged.digest == src.digest))
    return checks


def run_demo(out: TextIO = sys.stdout) -> int:
    with LocalStack() as stack:
        print("starting two registries and Azurite on loopback...", file=out)
        source, target, azurite = (
            stack.start_registry(),
            stack.start_registry(),
            stack.start_azurite(),
        )
        settings = load_settings(
            {
                "REPLICATOR_SOURCE": source.host,
                "REPLICATOR_TARGETS": target.host,
                "AzureWebJobsStorage": azurite.connection_string,
            },
            require_storage=True,
        )
        with serving(settings) as runtime:
            return _flow(runtime, out)


def _flow(runtime: LocalRuntime, out: TextIO) -> int:
    settings = runtime.settings
    ref = ImageRef(settings.source, "demo/hello", "v1")
    pushed = push_test_image(runtime.registries, ref)
    pushed_at = utcnow()
    print(f"pushed {ref} ({pushed.digest}, 2 platforms, {pushed.referrers} referrer(s))", file=out)
    triggers.on_registry_event(
        push_event(ref, pushed.digest, INDEX_MEDIA_TYPE, pushed.size, pushed_at)
    )
    storage = settings.storage
    assert storage is not None
    runner = runner_for(storage, runtime.queue.name, triggers.replicate)
    stats = runner.run_until_idle(timeout=120)
    rows = runtime.status.images(ref.repository, ref.tag)
    _table(rows, out)
    dst = ImageRef(settings.targets[0].login_server, ref.repository, ref.tag, pushed.digest)
    checks = compare(
        runtime.registries, ref.with_digest(pushed.digest), dst, pushed.referrer_digests
    )
    bad = [c.what for c in checks if not c.identical]
    print(
        f"{len(checks) - len(bad)}/{len(checks)} checks identical "
        f"({stats.succeeded} job(s) run, {stats.poisoned} poisoned)",
        file=out,
    )
    if bad or not rows:
        print("DR copy differs: " + ", ".join(bad or ["no status recorded"]), file=sys.stderr)
        return 1
    print("the DR copy is byte-identical.", file=out)
    return _resync_plan(runtime, storage, out)


def _resync_plan(runtime: LocalRuntime, storage: StorageConnection, out: TextIO) -> int:
    """A whole-registry resync, as ``POST /api/resync`` asks it: a plan id at once, the
    plan run from ``replication-plans``, its result from ``GET /api/status?plan=``."""
    asked = triggers.resync(func.HttpRequest("POST", "/api/resync", body=b"{}"))
    plan_id = json.loads(asked.get_body())["plan"]
    print(f"resync: HTTP {asked.status_code}, plan {plan_id} queued", file=out)
    runner_for(storage, PLANS_QUEUE, triggers.run_plan).run_until_idle(timeout=120)
    shown = triggers.status(
        func.HttpRequest("GET", "/api/status", body=b"", params={"plan": plan_id})
    )
    row = json.loads(shown.get_body())
    print(
        f"plan {plan_id}: {row.get('state')}, drift {row.get('drift')}, "
        f"{row.get('enqueued', 0)} job(s) enqueued",
        file=out,
    )
    return 0 if row.get("state") == "done" and row.get("enqueued") == 0 else 1


def _table(rows: list[dict[str, object]], out: TextIO) -> None:
    header = ("repository", "tag", "digest", "target", "outcome", "strategy", "lag (s)")
    lines = [header] + [
        (
            str(r.get("repository")),
            str(r.get("tag")),
            str(r.get("digest"))[:19] + "...",
            str(r.get("target")),
            str(r.get("outcome")),
            str(r.get("strategy")),
            f"{float(str(r.get('lagSeconds') or 0)):.2f}",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)), file=out)
