"""``status`` shows the request budgets: each registry bucket's budget, what the fleet
leased of it in the last minute, a 429 pause (throttled), and the queue's ETA."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from replicator.app.api import handle_status
from replicator.domain.budgets import BudgetState
from replicator.domain.config import load_settings
from replicator.domain.model import Action, CopyJob
from tests.fakes import fake_runtime

NOW = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)


class Book:
    def __init__(self, rows: list[BudgetState]) -> None:
        self._rows = rows

    def rows(self) -> list[BudgetState]:
        return self._rows


def test_status_shows_budgets_throttled_and_the_queue_eta() -> None:
    settings = load_settings(
        {"REPLICATOR_SOURCE": "src.azurecr.io", "REPLICATOR_TARGETS": "dr.azurecr.io"}
    )
    fakes = fake_runtime(settings)
    now = NOW.timestamp()
    book = Book(
        [
            BudgetState("src.azurecr.io", "read", 4_750.0, 2_375.0, now + 3, 0.0),
            BudgetState("src.azurecr.io", "referrers", 250.0, 250.0, now + 9, now + 20),
        ]
    )
    runtime = dataclasses.replace(fakes.runtime, budgets=book)
    for i in range(124):
        job = CopyJob(Action.PUSH, "src.azurecr.io", "dr.azurecr.io", "app", "sha256:" + "0" * 64)
        fakes.queue.send(dataclasses.replace(job, tag=f"v{i}"))
    shown = handle_status(runtime, {}, now=NOW).body["budgets"]
    assert shown["throttled"] is True
    assert shown["jobsPerMinute"] == 62  # the target's 1,000 writes a minute / 16 a job
    assert shown["queueEtaMinutes"] == 2.0
    source = shown["registries"]["src.azurecr.io"]
    assert source["read"] == {
        "perMinute": 5_000.0,
        "usedLastMinute": 0.5,
        "throttled": False,
        "throttledUntil": None,
        "saturated": True,
    }
    assert source["referrers"]["throttled"] is True
    assert source["referrers"]["throttledUntil"] == "2026-12-01T14:00:20+00:00"
    assert shown["registries"]["dr.azurecr.io"]["write"]["usedLastMinute"] == 0.0
    assert shown["registries"]["arm"]["write"]["perMinute"] == 600.0


def test_status_without_a_budget_book_shows_the_configured_budgets() -> None:
    settings = load_settings(
        {"REPLICATOR_SOURCE": "a.example.com", "REPLICATOR_TARGETS": "b.example.com"}
    )
    shown = handle_status(fake_runtime(settings).runtime, {}, now=NOW).body["budgets"]
    assert shown["throttled"] is False
    assert list(shown["registries"]) == ["arm"]  # neither registry has a budget
