"""Repair jobs (``CopyJob.repair``, what the verify sweep sends for a blob DR lost under a
manifest it holds): the queue message, and the worker's decision on in-memory fakes. A
plain job for a digest DR holds is already present; a repair job is copied all the same,
with the copier told to repair, and copied over the data plane even where the strategy
imports (only the copy checks each blob). The copy itself: tests/integration/test_repair.py.
"""

from __future__ import annotations

import json

import pytest

from replicator.app import service
from replicator.app.ports import DeliveryPath
from replicator.domain.config import Settings
from replicator.domain.errors import InvalidJobError
from replicator.domain.model import Action, CopyJob, Outcome, Strategy, Target, parse_origin
from tests.fakes import Fakes, digest_of, fake_runtime

SRC, DR = "source.example", "dr.example"
ACR_SRC, ACR_DR = "src.azurecr.io", "dr.azurecr.io"
DR_ID = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/dr"
HELD = digest_of("held")


def job(fakes: Fakes, *, repair: bool, origin: str = "reconcile") -> CopyJob:
    settings = fakes.runtime.settings
    target = settings.targets[0].login_server
    made = parse_origin(origin)
    return CopyJob(Action.PUSH, settings.source, target, "app", HELD, origin=made, repair=repair)


def held_on_both(settings: Settings) -> Fakes:
    fakes = fake_runtime(settings)
    fakes.source.put("app", HELD, "v1")
    fakes.target.put("app", HELD, "v1")
    return fakes


# -- the message --------------------------------------------------------------------------
def test_a_repair_job_round_trips_through_the_queue_message() -> None:
    sent = CopyJob(Action.PUSH, SRC, DR, "app", HELD, origin="reconcile", repair=True)
    text = sent.to_json()
    assert json.loads(text)["repair"] is True
    assert CopyJob.from_json(text) == sent


def test_a_plain_job_is_the_message_it_was_and_an_old_message_decodes_unrepaired() -> None:
    plain = CopyJob(Action.PUSH, SRC, DR, "app", HELD, "v1", origin="event")
    assert "repair" not in json.loads(plain.to_json())  # no new key in any other message
    old = {k: v for k, v in plain.to_dict().items() if k != "repair"}
    decoded = CopyJob.from_dict(old)
    assert (decoded, decoded.repair) == (plain, False)


def test_a_repair_job_has_an_id_of_its_own() -> None:
    plain = CopyJob(Action.PUSH, SRC, DR, "app", HELD, origin="reconcile")
    repair = plain.evolve(repair=True, job_id="")
    assert repair.job_id != plain.job_id
    body = repair.to_dict() | {"job_id": plain.job_id}  # a repair claiming the plain id
    with pytest.raises(InvalidJobError, match="job_id"):
        CopyJob.from_dict(body)


@pytest.mark.parametrize("value", ["true", 1, None])
def test_a_repair_flag_that_is_not_a_boolean_is_refused(value: object) -> None:
    body = CopyJob(Action.PUSH, SRC, DR, "app", HELD).to_dict() | {"repair": value}
    with pytest.raises(InvalidJobError, match="repair must be true or false"):
        CopyJob.from_dict(body)


# -- the worker's decision ----------------------------------------------------------------
@pytest.mark.parametrize("origin", ["event", "cli"])
def test_a_plain_job_for_a_digest_dr_holds_is_already_present(origin: str) -> None:
    fakes = held_on_both(Settings(SRC, (Target(DR),)))
    result = service.replicate(fakes.runtime, job(fakes, repair=False, origin=origin))
    assert result.outcome is Outcome.ALREADY_PRESENT
    assert fakes.copier.copies == []


@pytest.mark.parametrize("origin", ["reconcile", "event", "cli"])
def test_a_repair_job_for_a_digest_dr_holds_is_copied_as_a_repair(origin: str) -> None:
    fakes = held_on_both(Settings(SRC, (Target(DR),)))
    result = service.replicate(fakes.runtime, job(fakes, repair=True, origin=origin))
    assert (result.outcome, result.strategy) == (Outcome.COPIED, DeliveryPath.COPY)
    assert fakes.copier.repairs == [f"app@{HELD}->{DR}"]


@pytest.mark.parametrize("strategy", [Strategy.AUTO, Strategy.IMPORT])
def test_a_repair_copies_where_the_strategy_imports(strategy: Strategy) -> None:
    """ImportImage says nothing of the blobs a manifest DR holds names: a repair copies."""
    fakes = held_on_both(Settings(ACR_SRC, (Target(ACR_DR, DR_ID, strategy),)))
    result = service.replicate(fakes.runtime, job(fakes, repair=True))
    assert (result.outcome, result.strategy) == (Outcome.COPIED, DeliveryPath.COPY)
    assert (fakes.importer.imports, fakes.copier.repairs) == ([], [f"app@{HELD}->{ACR_DR}"])


def test_a_repair_job_whose_digest_the_source_lost_copies_nothing() -> None:
    fakes = fake_runtime(Settings(SRC, (Target(DR),)))
    fakes.target.put("app", HELD, "v1")
    result = service.replicate(fakes.runtime, job(fakes, repair=True))
    assert result.outcome is Outcome.SOURCE_MISSING
    assert fakes.copier.copies == []
