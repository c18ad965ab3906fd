from __future__ import annotations

import pytest

from replicator.domain.filters import Filters, glob_match


@pytest.mark.parametrize(
    ("pattern", "repository", "tag", "expected"),
    [
        ("team/*", "team/app", "v1", True),
        ("team/*", "team/sub/app", "v1", False),
        ("team/**", "team/sub/app", "v1", True),
        ("*:v*", "app", "v1", True),
        ("*:v*", "app", "latest", False),
        ("app:1.?", "app", "1.2", True),
        ("app", "app", "anything", True),
        ("app", "apple", "x", False),
        ("**:*-rc", "a/b/c", "1.0-rc", True),
    ],
    ids=[
        "star-segment",
        "star-not-across",
        "double-star",
        "tag-glob",
        "tag-glob-miss",
        "question",
        "bare-repo-any-tag",
        "no-prefix-match",
        "deep-tag",
    ],
)
def test_glob(pattern: str, repository: str, tag: str, expected: bool) -> None:
    assert glob_match(pattern, repository, tag) is expected


def test_exclude_wins_and_reasons() -> None:
    filters = Filters(include=("team/**",), exclude=("team/scratch/**",))
    assert filters.allows("team/app", "v1")
    assert not filters.allows("other/app", "v1")
    assert not filters.allows("team/scratch/x", "v1")
    assert "REPLICATOR_INCLUDE" in (filters.reason("other/app", "v1") or "")
    assert "team/scratch/**" in (filters.reason("team/scratch/x", "v1") or "")
    assert Filters().allows("anything", None)
