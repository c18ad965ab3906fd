"""The spread of enqueued jobs (``domain.budgets.enqueue_per_minute``) is generous: the
jobs a minute the budgets could serve if every job were the cheapest a copy makes, so the
request pacer, not the spread, is the limit for a typical image (it was that image's
estimate, ``jobs_per_minute``: 62 a minute into a Standard target, a few per cent of the
budget for small images), and never faster than the cheapest job could be served."""

from __future__ import annotations

import pytest

from replicator.domain.budgets import (
    BUCKETS,
    SOURCE_REQUESTS_LEAST,
    TARGET_REQUESTS_LEAST,
    enqueue_per_minute,
    jobs_per_minute,
    limits_for,
    pacing_limits,
)
from replicator.domain.config import Settings, load_settings

CASES = [
    ({"REPLICATOR_TARGETS": "dr.azurecr.io"}, 62, 250),
    (
        {
            "REPLICATOR_TARGETS": "dr.azurecr.io",
            "REPLICATOR_REGISTRY_SKUS": "src.azurecr.io=Premium,dr.azurecr.io=Premium",
        },
        125,
        1000,
    ),
    (
        {
            "REPLICATOR_TARGETS": "127.0.0.1:5002",
            "REPLICATOR_RATE_LIMITS": '{"127.0.0.1:5002": {"read": 900, "write": 480}}',
        },
        30,
        250,
    ),
    ({"REPLICATOR_SOURCE": "127.0.0.1:5001", "REPLICATOR_TARGETS": "127.0.0.1:5002"}, 600, 600),
]
IDS = ["standard-pair", "premium-pair", "configured-target", "no-budgets"]


def settings_of(env: dict[str, str]) -> Settings:
    return load_settings({"REPLICATOR_SOURCE": "src.azurecr.io", **env})


@pytest.mark.parametrize(("env", "typical", "spread"), CASES, ids=IDS)
def test_the_spread_is_the_cheapest_jobs_rate_not_a_typical_images(
    env: dict[str, str], typical: int, spread: int
) -> None:
    settings = settings_of(env)
    assert (jobs_per_minute(settings), enqueue_per_minute(settings)) == (typical, spread)
    assert enqueue_per_minute(settings) >= jobs_per_minute(settings)  # the pacer limits those


@pytest.mark.parametrize(("env", "typical", "spread"), CASES[:3], ids=IDS[:3])
def test_the_spread_never_runs_ahead_of_what_the_budgets_serve_of_the_cheapest_job(
    env: dict[str, str], typical: int, spread: int
) -> None:
    settings = settings_of(env)
    per_minute = enqueue_per_minute(settings)
    for registry in settings.registries:
        least = SOURCE_REQUESTS_LEAST if registry == settings.source else TARGET_REQUESTS_LEAST
        paced = pacing_limits(limits_for(settings, registry))
        for bucket in BUCKETS:
            rate, need = paced.rate(bucket), least.rate(bucket)
            if rate is not None and need:
                assert per_minute * need <= rate, (registry, bucket)
