"""Reconcile spreads its jobs at the jobs a minute the request budgets sustain (it was a
fixed 600 a minute, whatever the registries' limits)."""

from __future__ import annotations

import pytest

from replicator.app.reconcile import run_reconcile
from replicator.domain.budgets import enqueue_per_minute, jobs_per_minute
from replicator.domain.config import load_settings
from tests.fakes import digest_of, fake_runtime


def test_reconcile_spreads_jobs_at_the_budgets_rate_for_the_cheapest_job() -> None:
    settings = load_settings(
        {"REPLICATOR_SOURCE": "src.azurecr.io", "REPLICATOR_TARGETS": "dr.azurecr.io"}
    )
    assert jobs_per_minute(settings) == 62  # a typical image into a Standard target (ETAs)
    assert enqueue_per_minute(settings) == 250  # the source's referrers share, 1 a job
    fakes = fake_runtime(settings)
    for i in range(600):
        fakes.source.put("app", digest_of(f"image {i}"), f"v{i}")
    report = run_reconcile(fakes.runtime, sleep=lambda _s: None)
    assert report.enqueued == 600
    delays = sorted(delay for _job, delay in fakes.queue.sent)
    assert delays == [0] * 250 + [60] * 250 + [120] * 100


def test_sync_reads_the_budgets_as_the_app_does_and_names_a_bad_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from replicator.cli import main
    from replicator.cli.exits import EXIT_USAGE

    monkeypatch.setenv("REPLICATOR_RATE_LIMITS", '{"127.0.0.1:1": {"read": -5}}')
    code = main(["sync", "--source", "127.0.0.1:1", "--target", "127.0.0.1:2"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "REPLICATOR_RATE_LIMITS['127.0.0.1:1'].read must be a positive number" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
