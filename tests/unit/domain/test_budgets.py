"""Budgets: ACR's published table, REPLICATOR_RATE_LIMITS, the shares, and the pacing bucket
(on a fake clock: no wall-clock time is asserted)."""

from __future__ import annotations

import json

import pytest

from devstack.throttling import FakeClock
from replicator.domain.budgets import (
    ARM,
    BUCKETS,
    Limits,
    TokenBucket,
    acr_identity_limits,
    acr_limits,
    budget_plan,
    limits_for,
    parse_rate_limits,
)
from replicator.domain.config import load_settings
from replicator.domain.errors import ConfigError

SRC = "src.azurecr.io"
DR = "dr.azurecr.io"


def settings(**env: str):  # type: ignore[no-untyped-def]
    base = {"REPLICATOR_SOURCE": SRC, "REPLICATOR_TARGETS": f"{DR},mirror.example.com"}
    return load_settings({**base, **env})


# -- the published table -------------------------------------------------------------------
def test_acr_table_per_sku() -> None:
    # reference section 3: Basic and Standard share a row, Premium doubles it (delete x4)
    assert acr_limits("Standard") == Limits(
        read=10_000, write=2_000, delete=1_000, referrers=500, token=10_000
    )
    assert acr_limits("basic") == acr_limits("Standard")
    assert acr_limits("Premium") == Limits(
        read=20_000, write=4_000, delete=4_000, referrers=2_000, token=20_000
    )
    assert acr_identity_limits("Premium").referrers == 1_000
    assert acr_identity_limits("Standard").token is None  # none published for OAuth
    with pytest.raises(ValueError, match="unknown ACR SKU"):
        acr_limits("Classic")


def test_limits_rate_and_str() -> None:
    limits = Limits(read=100, referrers=5)
    assert [limits.rate(b) for b in BUCKETS] == [100, None, None, 5, None]
    assert str(limits) == "read 100/min, referrers 5/min"
    assert str(Limits()) == "no limit"


# -- REPLICATOR_RATE_LIMITS ----------------------------------------------------------------
def test_parse_rate_limits_valid() -> None:
    problems: list[str] = []
    raw = json.dumps(
        {"Mirror.Example.com": {"read": 300, "write": 60.5}, ARM: {"write": 100}, DR: {}}
    )
    parsed = parse_rate_limits(raw, problems)
    assert problems == []
    assert parsed == {
        "mirror.example.com": Limits(read=300, write=60.5),
        ARM: Limits(write=100),
        DR: Limits(),
    }
    assert parse_rate_limits("  ", problems) == {} and problems == []


def test_parse_rate_limits_lists_every_problem() -> None:
    problems: list[str] = []
    raw = json.dumps(
        {
            "a.example.com": {"read": 0, "pulls": 5, "write": "many"},
            "b.example.com": [1],
            "c.example.com": {"referrers": True, "delete": -1},
            "bad/key": {"read": 1},
            ARM: {"delete": 5},
        }
    )
    parsed = parse_rate_limits(raw, problems)
    text = "\n".join(problems)
    assert "a.example.com'].read must be a positive number" in text
    assert "a.example.com'] has unknown buckets: pulls" in text
    assert "a.example.com'].write must be a positive number" in text
    assert "b.example.com'] must be an object" in text
    assert "c.example.com'].referrers must be a positive number" in text
    assert "c.example.com'].delete must be a positive number" in text
    assert "'bad/key']: the key must be a login server" in text
    assert "'arm'] has unknown buckets: delete (known: read, write)" in text
    assert len(problems) == 8
    assert parsed["a.example.com"] == Limits()  # kept, without the invalid buckets


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_parse_rate_limits_not_an_object(raw: str, fragment: str) -> None:
    problems: list[str] = []
    assert parse_rate_limits(raw, problems) == {}
    assert len(problems) == 1 and fragment in problems[0]


# -- settings and limits_for ---------------------------------------------------------------
def test_settings_defaults() -> None:
    s = settings()
    assert (s.rate_limits, s.source_share, s.target_share, s.skus) == ({}, 0.5, 1.0, {})


def test_settings_list_every_budget_problem_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        settings(
            REPLICATOR_RATE_LIMITS="{oops",
            REPLICATOR_SOURCE_SHARE="0",
            REPLICATOR_TARGET_SHARE="1.5",
            REPLICATOR_REGISTRY_SKUS='{"src.azurecr.io": "Gold", "mirror.example.com": "Basic"}',
        )
    problems = caught.value.problems
    assert any(p.startswith("REPLICATOR_RATE_LIMITS is not valid JSON") for p in problems)
    assert any(p.startswith("REPLICATOR_SOURCE_SHARE must be a fraction") for p in problems)
    assert any(p.startswith("REPLICATOR_TARGET_SHARE must be a fraction") for p in problems)
    assert any("unknown ACR SKU 'Gold'" in p for p in problems)
    assert any("'mirror.example.com'] is not an ACR login server" in p for p in problems)


@pytest.mark.parametrize("share", ["abc", "-0.1", "nan", "inf"])
def test_share_must_be_a_fraction(share: str) -> None:
    with pytest.raises(ConfigError, match="REPLICATOR_SOURCE_SHARE must be a fraction"):
        settings(REPLICATOR_SOURCE_SHARE=share)


def test_skus_json_or_pairs() -> None:
    assert settings(REPLICATOR_REGISTRY_SKUS=f"{SRC}=premium, {DR}=Basic").skus == {
        SRC: "Premium",
        DR: "Basic",
    }
    assert settings(REPLICATOR_REGISTRY_SKUS=json.dumps({SRC: "Standard"})).skus == {
        SRC: "Standard"
    }


def test_source_gets_its_share_of_the_sku_table() -> None:
    s = settings(REPLICATOR_REGISTRY_SKUS=f"{SRC}=Premium")
    # half of Premium's per-registry row, within the per-identity row
    assert limits_for(s, SRC) == Limits(
        read=10_000, write=2_000, delete=2_000, referrers=1_000, token=10_000
    )
    smaller = settings(REPLICATOR_REGISTRY_SKUS=f"{SRC}=Premium", REPLICATOR_SOURCE_SHARE="0.25")
    assert limits_for(smaller, SRC).read == 5_000
    assert limits_for(smaller, SRC).referrers == 500


def test_target_share_is_capped_by_the_identity_row() -> None:
    # a DR target at share 1.0 would be 10,000 reads, but one identity gets 5,000
    s = settings()
    assert limits_for(s, DR) == Limits(
        read=5_000, write=1_000, delete=500, referrers=250, token=10_000
    )
    assert limits_for(s, DR) == limits_for(settings(REPLICATOR_REGISTRY_SKUS=f"{DR}=Basic"), DR)


def test_configured_limits_win_per_bucket_and_get_the_share() -> None:
    raw = json.dumps(
        {SRC: {"read": 2_000}, "mirror.example.com": {"write": 120}, ARM: {"write": 60}}
    )
    s = settings(REPLICATOR_RATE_LIMITS=raw)
    # read configured (times 0.5), the rest from the SKU (Standard when not given)
    assert limits_for(s, SRC) == Limits(
        read=1_000, write=1_000, delete=500, referrers=250, token=5_000
    )
    # not an ACR: only what is configured, times the target share
    assert limits_for(s, "mirror.example.com") == Limits(write=120)
    # ARM: the configured write, ARM's published read rate, no share
    assert limits_for(s, ARM) == Limits(read=1_500, write=60)
    assert limits_for(settings(), ARM).write == 600
    assert limits_for(settings(), "mirror.example.com") == Limits()


def test_budget_plan_names_every_registry_and_arm() -> None:
    plan = budget_plan(settings())
    assert sorted(plan) == sorted([SRC, DR, "mirror.example.com", ARM])


# -- the token bucket ----------------------------------------------------------------------
def test_bucket_paces_evenly_after_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, burst_seconds=2, clock=clock)  # 10 a second, 20 deep
    waits = [bucket.take() for _ in range(25)]
    assert waits[:20] == [0.0] * 20
    # then one every 0.1 s, in the order asked
    assert waits[20:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_bucket_never_allows_more_than_rate_plus_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(120, burst_seconds=3, clock=clock)  # 2 a second, 6 deep
    sent: list[float] = []
    for _ in range(200):  # callers that send when told, 0.05 s apart
        wait = bucket.take()
        sent.append(clock.now + wait)
        clock.advance(0.05)
    sent.sort()
    start = sent[0]
    for t in sent:  # in any 60 s window from the start: at most 120 + 6
        assert sum(1 for s in sent if t <= s < t + 60) <= 126
    assert sum(1 for s in sent if start <= s < start + 10) <= 2 * 10 + 6


def test_bucket_refills_up_to_its_depth_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst_seconds=5, clock=clock)  # 1 a second, 5 deep
    for _ in range(5):
        assert bucket.take() == 0.0
    clock.advance(3600)  # an idle hour saves 5, not 3600
    assert bucket.available() == pytest.approx(5)
    assert [bucket.take() for _ in range(6)] == pytest.approx([0, 0, 0, 0, 0, 1])


def test_a_slow_rate_still_lets_one_request_through() -> None:
    bucket = TokenBucket(6, burst_seconds=2, clock=FakeClock())  # 0.2 tokens of burst
    assert bucket.capacity == 1.0
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(10.0)


def test_take_many_and_give_back() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst_seconds=4, clock=clock)
    assert bucket.take(4) == 0.0
    assert bucket.take(2) == pytest.approx(2.0)  # debt of 2 at 1 a second
    bucket.give_back(2)
    assert bucket.available() == pytest.approx(0.0)
    bucket.give_back(100)
    assert bucket.available() == pytest.approx(4.0)  # never above its depth


def test_hold_pauses_the_refill_and_drops_the_savings() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst_seconds=10, clock=clock)
    assert bucket.take() == 0.0
    bucket.hold(30)  # a 429 with Retry-After: 30
    assert bucket.take() == pytest.approx(31.0)  # the pause, then one token's refill
    clock.advance(31)
    assert bucket.take() == pytest.approx(1.0)  # no burst when the pause ends
    bucket.hold(5)
    bucket.hold(1)  # a shorter hold does not shorten the pause
    # the pause, then the debt of the caller already waiting, then this one's token
    assert bucket.take() == pytest.approx(5 + 1 + 1)


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf")])
def test_bucket_needs_a_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate)


def test_jobs_a_minute_follow_the_slowest_budgeted_bucket() -> None:
    from replicator.domain.budgets import DEFAULT_JOBS_PER_MINUTE, jobs_per_minute

    # no registry is an ACR or configured: the old fixed spread
    plain = load_settings(
        {"REPLICATOR_SOURCE": "a.example.com", "REPLICATOR_TARGETS": "b.example.com"}
    )
    assert jobs_per_minute(plain) == DEFAULT_JOBS_PER_MINUTE
    # a Standard target: one identity's 1,000 writes a minute / 16 per job (the source's
    # 250 referrers / 3 would allow 83)
    assert jobs_per_minute(settings()) == 62
    premium = settings(REPLICATOR_REGISTRY_SKUS=f"{DR}=Premium")
    assert jobs_per_minute(premium) == 83
    # a configured slow target write bucket: 160 / 16 per job
    slow = settings(REPLICATOR_RATE_LIMITS=json.dumps({"mirror.example.com": {"write": 160}}))
    assert jobs_per_minute(slow) == 10
