"""The import plan: ImportImage's manifest limit decided before ARM, referrers in order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from replicator.adapters.acr.errors import TOO_MANY_MANIFESTS, ImportUnavailableError
from replicator.adapters.acr.import_plan import (
    IMPORT_MANIFEST_BUDGET,
    MAX_IMPORT_MANIFESTS,
    MAX_REFERRER_DEPTH,
    count_manifests,
    plan_import,
    referrer_order,
)
from replicator.domain.manifests import OCI_INDEX, OCI_MANIFEST, Manifest

REF = "src.azurecr.io/team/app@sha256:top"


def image(n: int) -> Manifest:
    body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"n": n}, "layers": []}
    return Manifest.from_bytes(json.dumps(body).encode(), OCI_MANIFEST)


def index(children: list[Manifest]) -> Manifest:
    entries: list[dict[str, Any]] = [
        {"mediaType": c.media_type, "digest": c.digest, "size": len(c.content)} for c in children
    ]
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return Manifest.from_bytes(json.dumps(body).encode(), OCI_INDEX)


def store(*manifests: Manifest) -> dict[str, Manifest]:
    return {m.digest: m for m in manifests}


def no_referrers(_subject: str) -> list[dict[str, str]]:
    return []


def listing(graph: dict[str, list[str]]) -> Any:
    """A referrers listing from ``{subject: [referrer digests]}``."""
    return lambda subject: [
        {"digest": d, "mediaType": OCI_MANIFEST} for d in graph.get(subject, [])
    ]


def test_the_budget_stays_one_under_the_documented_limit() -> None:
    # UNCONFIRMED whether the index counts: 49 in all meets both readings of "50 manifests"
    assert (MAX_IMPORT_MANIFESTS, IMPORT_MANIFEST_BUDGET) == (50, 49)


@pytest.mark.parametrize(("children", "fits"), [(48, True), (49, False), (50, False)])
def test_an_index_and_its_children_count_together(children: int, fits: bool) -> None:
    top = index([image(i) for i in range(children)])
    if fits:
        plan = plan_import(REF, top, store().__getitem__, no_referrers)
        assert plan.manifests == children + 1 == IMPORT_MANIFEST_BUDGET
        return
    with pytest.raises(ImportUnavailableError, match=f"has {children + 1} manifests") as caught:
        plan_import(REF, top, store().__getitem__, no_referrers)
    assert caught.value.reason == TOO_MANY_MANIFESTS
    assert "at most 50" in str(caught.value)


def test_nested_indexes_are_fetched_and_counted_image_manifests_are_not() -> None:
    inner = index([image(1), image(2)])
    top = index([inner, image(3)])
    fetched: list[str] = []

    def fetch(digest: str) -> Manifest:
        fetched.append(digest)
        return store(inner)[digest]

    count, subjects = count_manifests(top, fetch)
    assert count == 5
    assert fetched == [inner.digest]
    assert subjects[0] == top.digest and len(set(subjects)) == 5


def test_a_single_manifest_is_one() -> None:
    assert count_manifests(image(1), store().__getitem__) == (1, (image(1).digest,))


def test_too_many_manifests_are_refused_before_any_referrer_is_listed() -> None:
    listed: list[str] = []

    def referrers(subject: str) -> list[dict[str, str]]:
        listed.append(subject)
        return []

    with pytest.raises(ImportUnavailableError):
        plan_import(REF, index([image(i) for i in range(60)]), store().__getitem__, referrers)
    assert listed == []


def test_referrers_of_the_index_its_children_and_of_referrers_subjects_first() -> None:
    graph = {
        "idx": ["sig-idx", "sbom"],
        "amd64": ["sig-amd64", "sbom"],  # the same referrer twice: imported once
        "sbom": ["sig-sbom"],
        "sig-sbom": [],
    }
    order = referrer_order(["idx", "amd64", "arm64"], listing(graph))
    assert order == ("sig-idx", "sbom", "sig-amd64", "sig-sbom")


def test_referrer_chains_stop_at_the_depth_limit() -> None:
    order = referrer_order(["d0"], lambda s: [{"digest": f"d{int(s[1:]) + 1}"}])
    assert len(order) == MAX_REFERRER_DEPTH
    assert order[-1] == f"d{MAX_REFERRER_DEPTH}"


def test_a_cycle_of_referrers_ends() -> None:
    assert referrer_order(["a"], listing({"a": ["b"], "b": ["a"]})) == ("b",)


def test_the_plan_lists_the_image_and_its_referrers() -> None:
    amd64, arm64 = image(1), image(2)
    top = index([amd64, arm64])
    graph = {top.digest: ["sig"], amd64.digest: ["sbom"]}
    plan = plan_import(REF, top, store().__getitem__, listing(graph))
    assert plan.digest == top.digest
    assert plan.manifests == 3
    assert plan.subjects == (top.digest, amd64.digest, arm64.digest)
    assert plan.referrers == ("sig", "sbom")
    assert plan.oversized == ()


def test_a_referrer_index_over_the_budget_is_marked_the_image_still_imports() -> None:
    small = index([image(100), image(101)])
    big = index([image(200 + i) for i in range(IMPORT_MANIFEST_BUDGET)])  # 50 with itself
    top = index([image(1)])

    def listed(subject: str) -> list[dict[str, str]]:
        if subject != top.digest:
            return []
        return [{"digest": m.digest, "mediaType": OCI_INDEX} for m in (small, big)]

    plan = plan_import(REF, top, store(small, big).__getitem__, listed)
    assert plan.referrers == (small.digest, big.digest)
    assert plan.oversized == ((big.digest, IMPORT_MANIFEST_BUDGET + 1),)
