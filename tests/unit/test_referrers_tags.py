"""Referrers tag schema tags (``sha256-<hex>``) are not tags to replicate, diff or delete."""

from __future__ import annotations

import pytest

from replicator.adapters.oci.referrers import fallback_tag
from replicator.domain.config import DeletePolicy, Settings
from replicator.domain.filters import Filters
from replicator.domain.model import Action, TagEntry, Target
from replicator.domain.planning import is_referrers_tag, jobs_for, plan

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
SUBJECT = "sha256:" + "c" * 64
SHA512 = "sha512:" + "d" * 128
REFERRERS_TAG = "sha256-" + "c" * 64
SETTINGS = Settings(source="src.example.io", targets=(Target("dr.example.io"),))


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (REFERRERS_TAG, True),
        ("sha512-" + "d" * 64, True),
        ("sha256-" + "c" * 63, False),
        ("sha256-" + "C" * 64, False),
        (REFERRERS_TAG + ".sig", False),  # cosign's legacy tags are images' tags: replicated
        ("sha256-" + "c" * 64 + "x", False),
        ("md5-" + "c" * 64, False),
        ("v1", False),
        ("latest", False),
    ],
    ids=["sha256", "sha512-cut", "short", "uppercase", "cosign-sig", "long", "md5", "v1", "latest"],
)
def test_is_referrers_tag(tag: str, expected: bool) -> None:
    assert is_referrers_tag(tag) is expected


@pytest.mark.parametrize("digest", [SUBJECT, SHA512], ids=["sha256", "sha512"])
def test_fallback_tag_is_the_schema_s_and_recognised(digest: str) -> None:
    """ "Referrers Tag Schema": <alg>-<ref>, <ref> at most 64 characters of the digest."""
    tag = fallback_tag(digest)
    algorithm, _, encoded = digest.partition(":")
    assert tag == f"{algorithm}-{encoded[:64]}"
    assert is_referrers_tag(tag)


def e(ref: str, digest: str | None) -> TagEntry:
    repository, tag = ref.split(":")
    return TagEntry(repository, tag, digest)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ([e(f"app:{REFERRERS_TAG}", A)], []),  # fallback -> API: never written into DR
        ([], [e(f"app:{REFERRERS_TAG}", A)]),  # API -> fallback: not an extra to delete
        ([e(f"app:{REFERRERS_TAG}", A)], [e(f"app:{REFERRERS_TAG}", B)]),  # merged in DR
    ],
    ids=["only-in-source", "only-in-target", "other-digest"],
)
@pytest.mark.parametrize("policy", [DeletePolicy(), DeletePolicy(mode="propagate")], ids=str)
def test_referrers_tags_are_no_tag_drift(
    source: list[TagEntry], target: list[TagEntry], policy: DeletePolicy
) -> None:
    image = [e("app:v1", SUBJECT)]
    made = plan(image + source, image + target, Filters(), policy)
    assert not made.drift
    assert made.in_step == 1
    assert jobs_for(made, SETTINGS, "reconcile") == []


def test_image_tags_beside_referrers_tags_still_drift() -> None:
    made = plan(
        [e("app:v1", A), e(f"app:{REFERRERS_TAG}", B)],
        [e("app:old", B), e(f"app:{REFERRERS_TAG}", A)],
        Filters(),
        DeletePolicy(mode="propagate"),
    )
    assert [x.tag for x in made.missing] == ["v1"]
    assert [x.tag for x in made.extra] == ["old"]
    jobs = jobs_for(made, SETTINGS, "reconcile")
    assert {(j.action, j.tag) for j in jobs} == {(Action.PUSH, "v1"), (Action.DELETE, "old")}
