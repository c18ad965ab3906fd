"""The fault suite on the four registry shape pairs (issue 15 item 1): referrers copied
under faults injected on the DR side, and a worker killed in the middle of a referrer copy.

Shapes as in tests/integration/test_referrer_shapes.py: a registry either has the OCI 1.1
referrers API (ACR; ``devstack.referrers_api`` in front of distribution) or keeps referrers
under the referrers tag schema (``sha256-<hex>``). Pairs: API -> API (ACR to ACR, the main
case), fallback -> fallback, API -> fallback, fallback -> API. The images are signed
two-platform indexes: an SBOM on the index and a signature on each platform manifest.
The DR proxy (``devstack.faulty_proxy``) aims its faults at the referrers' own requests
(their manifest PUTs by digest, their blob uploads, DR's referrers listing, the referrers
tag's read and write). Each run ends with every image and referrer in DR, listed by DR's
referrers API where DR has it and by the referrers tag otherwise, no ``sha256-`` tag in a
registry with the API, nothing poisoned, and a reconcile pass afterwards enqueuing nothing.

The faults fire by count, not by chance; which referrers they aim at is drawn from a
seeded ``random.Random`` (``SEED``), so a failing run is the same run again.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
from collections.abc import Iterator

import httpx
import pytest

from devstack.faulty_proxy import Fault, FaultyProxy
from devstack.localruntime import LocalRuntime
from devstack.localstack import Azurite, LocalStack, Registry
from devstack.localworker import deliver_push, runner, worker_runtime
from devstack.referrers_api import (
    SHAPE_IDS,
    SHAPE_PAIRS,
    ReferrersRegistry,
    shaped_pair,
)
from devstack.testimages import SIGNATURE_TYPE, PushedImage, push_images, push_referrer
from replicator.adapters.oci.referrers import fallback_tag, list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.app.api import handle_status
from replicator.app.reconcile import run_reconcile
from replicator.domain.planning import is_referrers_tag
from replicator.domain.reference import ImageRef
from tests.e2e.e2e_support import PATIENT, differences, tags
from tests.e2e.test_faults import _wait_for, _worker

pytestmark = pytest.mark.integration
SEED = 15
IMAGES = 3  # over two repositories: 9 subjects, 9 referrers per pair


@pytest.fixture(params=SHAPE_PAIRS, ids=SHAPE_IDS)
def pair(request: pytest.FixtureRequest, stack: LocalStack) -> Iterator[tuple[Registry, Registry]]:
    """(source, target) of the shapes the parameter names; stopped after the test."""
    with shaped_pair(stack, *request.param) as started:
        yield started


def signed_images(registries: Registries, host: str, count: int) -> dict[ImageRef, PushedImage]:
    """``count`` two-platform indexes, each with an SBOM on the index and a signature on
    each platform manifest (``push_images`` signs the first; the second is signed here)."""
    pushed = push_images(registries, host, count, repos=2, prefix="shapes")
    signed = {}
    for ref, image in pushed.items():
        client = registries.client(host)
        second = client.get_manifest(ImageRef(host, ref.repository, digest=image.manifests[1]))
        extra = push_referrer(registries, ref, second, SIGNATURE_TYPE)
        signed[ref] = dataclasses.replace(
            image, referrers=image.referrers + 1, referrer_digests=(*image.referrer_digests, extra)
        )
    return signed


def announce(registries: Registries, source: Registry, images: dict[ImageRef, PushedImage]) -> None:
    """The push events the source raises: each image's, and on a registry without the API
    each referrers tag's too (it is a tag there, pushed like any other)."""
    client = registries.client(source.host)
    for ref, image in images.items():
        deliver_push(ref, image.digest)
        if isinstance(source, ReferrersRegistry):
            continue
        for subject in (image.digest, *image.manifests):
            index_ref = ImageRef(source.host, ref.repository, fallback_tag(subject))
            index = client.head_manifest(index_ref)
            assert index is not None, index_ref
            deliver_push(index_ref, index.digest)


def referrer_parts(
    registries: Registries, host: str, images: dict[ImageRef, PushedImage]
) -> tuple[list[str], list[str]]:
    """The referrers' manifest digests and the digests of the blobs they name."""
    manifests, blobs = [], []
    for ref, image in images.items():
        for digest in image.referrer_digests:
            manifests.append(digest)
            body = json.loads(
                registries.client(host)
                .get_manifest(ImageRef(host, ref.repository, digest=digest))
                .content
            )
            blobs += [body["config"]["digest"], *(layer["digest"] for layer in body["layers"])]
    return manifests, sorted(set(blobs))


def backend_tags(registry: Registry, repository: str) -> list[str]:
    """The tags the registry itself holds (behind the layer, for one with the API)."""
    behind = registry.backend if isinstance(registry, ReferrersRegistry) else registry
    assert behind is not None
    answer = httpx.get(f"{behind.url}/v2/{repository}/tags/list", trust_env=False)
    return list(answer.json().get("tags") or []) if answer.status_code == 200 else []


def assert_dr_complete(
    runtime: LocalRuntime,
    source: Registry,
    target: Registry,
    images: dict[ImageRef, PushedImage],
) -> None:
    """Every image and referrer in DR byte for byte; each subject's referrers listed by DR
    as the source lists them, in DR's own way; no referrers tag where there is the API;
    each image's status row says copied; the queue and its poison queue empty; and a
    reconcile pass has nothing to do."""
    registries = runtime.registries
    assert differences(registries, images, target.host) == []
    src, dst = registries.client(source.host), registries.client(target.host)
    for ref, image in images.items():
        for subject in (image.digest, *image.manifests):
            want = set(list_referrers(registries, src, ref.repository, subject).digests)
            got = set(list_referrers(registries, dst, ref.repository, subject).digests)
            assert want and got == want, (ref, subject)
        assert set(image.referrer_digests) <= {
            d
            for subject in (image.digest, *image.manifests)
            for d in list_referrers(registries, dst, ref.repository, subject).digests
        }
        (row,) = runtime.status.images(ref.repository, ref.tag)
        assert (row["outcome"], row["digest"]) == ("copied", image.digest)
    has_api = isinstance(target, ReferrersRegistry)
    assert registries.referrers_api[target.host] is has_api  # listed by DR's API, or its tags
    repos = {ref.repository for ref in images}
    for registry in (source, target):
        if isinstance(registry, ReferrersRegistry):
            for repo in repos:
                assert not [t for t in backend_tags(registry, repo) if is_referrers_tag(t)]
            assert not [t for _, t in registry.api.tags_written if is_referrers_tag(t)]
    if not has_api:
        for ref, image in images.items():
            want = {fallback_tag(s) for s in (image.digest, *image.manifests)}
            assert want <= set(tags(registries, target.host, ref.repository))
    assert handle_status(runtime, {}).body["queue"] == {"depth": 0, "poison": 0}
    settled = run_reconcile(runtime, sleep=lambda _: None)
    assert settled.enqueued == 0, [j.job_id for j in settled.jobs]


def _any(digests: list[str]) -> str:
    return "(" + "|".join(digests) + ")"


def copy_faults(
    rng: random.Random, manifests: list[str], blobs: list[str]
) -> list[tuple[str, Fault]]:
    """Faults on DR's side of the referrers' copy, each with where it must fire all its
    ``times`` (``any`` DR; ``api`` or ``fallback``: a DR of that shape, never the other;
    ``never-api``: a fallback DR, never one with the API), as ``unfired`` checks."""
    aimed = rng.sample(manifests, k=3)
    layers = rng.sample(blobs, k=2)
    return [
        # the referrer manifests' PUTs by digest: a 503 burst, and one stored but its answer
        # cut mid-body (the retry PUTs what is already there)
        ("any", Fault("PUT", rf"/manifests/{_any(aimed[:2])}", "status", status=503, times=3)),
        ("any", Fault("PUT", rf"/manifests/{_any(aimed[2:])}", "reset", times=1)),
        # the referrers' blobs: the upload's commit refused, then the existence check a 502
        ("any", Fault("PUT", rf"digest={_any(layers)}", "status", status=500, times=2)),
        ("any", Fault("HEAD", rf"/blobs/{_any(layers)}", "status", status=502, times=2)),
        # the referrers tag: its write refused, its read cut short; never asked of a DR
        # with the API, where no ``sha256-`` tag may be written
        ("never-api", Fault("PUT", r"/manifests/sha256-", "status", status=503, times=2)),
        ("never-api", Fault("GET", r"/manifests/sha256-", "truncate", times=1)),
    ]


def listing_faults() -> list[tuple[str, Fault]]:
    """Faults on DR's answers to reconcile's referrer check: its referrers listing refused
    (API), cut mid-body and reset (API: the page's body is read inside the retry, which it
    was not: such a cut left the subject unread), or its referrers tags cut short and reset
    (fallback). Retried, all of them: the pass reads every subject, nothing is taken for
    missing, nothing left unread."""
    return [
        ("api", Fault("GET", r"/referrers/sha256:", "status", status=503, times=2)),
        ("api", Fault("GET", r"/referrers/sha256:", "status", status=502, times=1)),
        ("api", Fault("GET", r"/referrers/sha256:", "truncate", times=2)),
        ("api", Fault("GET", r"/referrers/sha256:", "reset", times=1)),
        ("fallback", Fault("GET", r"/manifests/sha256-", "truncate", times=2)),
        ("fallback", Fault("GET", r"/manifests/sha256-", "reset", times=1)),
    ]


def unfired(faults: list[tuple[str, Fault]], has_api: bool) -> list[tuple[str, str, str, int]]:
    """The faults that did not fire as their shape says they must."""
    bad = []
    for where, fault in faults:
        if where == "never-api":
            ok = fault.fired == (0 if has_api else fault.times)
        elif where in ("api", "fallback") and (where == "api") is not has_api:
            ok = fault.fired == 0
        else:
            ok = fault.fired == fault.times
        if not ok:
            bad.append((where, fault.kind, fault.path, fault.fired))
    return bad


def test_referrers_copied_under_dr_faults_end_complete_on_every_shape(
    pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> None:
    source, target = pair
    has_api = isinstance(target, ReferrersRegistry)
    with (
        FaultyProxy(target.host) as proxy,
        worker_runtime(source, proxy, fresh_azurite) as (runtime, counting),
    ):
        images = signed_images(runtime.registries, source.host, IMAGES)
        manifests, blobs = referrer_parts(runtime.registries, source.host, images)
        rng = random.Random(SEED)
        faults = [(w, proxy.add(f)) for w, f in copy_faults(rng, manifests, blobs)]
        announce(runtime.registries, source, images)
        stats = runner(runtime, PATIENT).run_until_idle(timeout=240)
        proxy.clear()

        assert stats.poisoned == 0
        assert unfired(faults, has_api) == []
        assert {f"{r.repository}@{i.digest}" for r, i in images.items()} <= set(counting.done)
        # reconcile's referrer check reads DR under faults: nothing is taken for missing
        checks = [(w, proxy.add(f)) for w, f in listing_faults()]
        checked = run_reconcile(runtime, sleep=lambda _: None)
        proxy.clear()
        assert unfired(checks, has_api) == []
        assert checked.enqueued == 0, [j.job_id for j in checked.jobs]
        (referrers,) = checked.referrers
        assert (referrers.errors, referrers.checked) == ((), len(images))
        assert_dr_complete(runtime, source, target, images)


def test_worker_killed_mid_referrer_copy_recovers_on_every_shape(
    pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> None:
    """A worker process is killed while DR holds the PUT of a referrer manifest; the
    message comes back when its lease ends, and a second worker completes the image and
    all its referrers."""
    source, target = pair
    with (
        FaultyProxy(target.host) as proxy,
        worker_runtime(source, proxy, fresh_azurite) as (runtime, _),
    ):
        images = signed_images(runtime.registries, source.host, 1)
        manifests, _ = referrer_parts(runtime.registries, source.host, images)
        aimed = random.Random(SEED).choice(manifests)
        # held longer than the kill and the check below take on a loaded machine (the proxy
        # forwards a held request when its delay ends, whether or not its sender lives), and
        # every PUT of it, not only the first: on a fallback source the referrers tag's own
        # job carries the same referrer, and may PUT it while the first PUT is held
        stall = proxy.add(
            Fault("PUT", rf"/manifests/{_any([aimed])}", "slow", delay=30, times=1000)
        )
        announce(runtime.registries, source, images)
        env = {
            "REPLICATOR_SOURCE": source.host,
            "REPLICATOR_TARGETS": proxy.host,
            "AzureWebJobsStorage": fresh_azurite.connection_string,
            "REPLICATOR_UNTAGGED_DELAY": "1s",
            "E2E_RUN_LEASE": "4",
            "E2E_CLAIM_LEASE": "3",
        }
        first = _worker(env)
        try:
            _wait_for(lambda: stall.fired >= 1)
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL
        (ref,) = images
        held = ImageRef(target.host, ref.repository, digest=aimed)
        assert runtime.registries.client(target.host).head_manifest(held) is None  # mid-copy
        proxy.clear()

        second = _worker(env)
        out, err = second.communicate(timeout=180)
        assert second.returncode == 0, err[-2000:]
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["poisoned"] == 0 and stats["succeeded"] >= 1
        assert_dr_complete(runtime, source, target, images)
