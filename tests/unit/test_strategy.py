from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from replicator.adapters.acr.errors import (
    NETWORK,
    NOT_CONFIGURED,
    SOURCE_READ,
    TARGET_AUTHORIZATION,
    TOO_MANY_MANIFESTS,
    ImportUnavailableError,
)
from replicator.adapters.azure import telemetry
from replicator.app.delivery import (
    ImportVerdicts,
    deliverer,
    foreseen_refusal,
    import_verdicts,
    replicate_with_strategy,
)
from replicator.app.ports import DeliveryPath
from replicator.domain.config import Settings
from replicator.domain.errors import PermanentRegistryError
from replicator.domain.model import Action, CopyJob, CopyReport, Strategy, Target
from replicator.domain.reference import ImageRef
from replicator.domain.strategy import choose_strategy, planned_path
from tests.metrics import counted

RID = (
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/contosodr"
)
SRC_RID = RID.replace("contosodr", "contososrc")

CASES = [
    # (id, source, source resource id, target, expected, reason fragment)
    (
        "copy-configured",
        "src.azurecr.io",
        SRC_RID,
        Target("dr.azurecr.io", RID, Strategy.COPY),
        Strategy.COPY,
        "copy is configured",
    ),
    (
        "import-configured",
        "mirror.example.com",
        None,
        Target("dr.azurecr.io", RID, Strategy.IMPORT),
        Strategy.IMPORT,
        "import is configured",
    ),
    (
        "auto-both-acr",
        "src.azurecr.io",
        None,
        Target("dr.azurecr.io", RID),
        Strategy.IMPORT,
        "both ends are ACR",
    ),
    (
        "auto-sovereign",
        "src.azurecr.cn",
        None,
        Target("dr.azurecr.cn", RID),
        Strategy.IMPORT,
        "both ends are ACR",
    ),
    (
        "auto-source-by-id-on-loopback",
        "127.0.0.1:5000",
        SRC_RID,
        Target("127.0.0.1:5001", RID),
        Strategy.IMPORT,
        "both ends are ACR",
    ),
    (
        "auto-no-target-id",
        "src.azurecr.io",
        SRC_RID,
        Target("dr.azurecr.io"),
        Strategy.COPY,
        "no resource_id",
    ),
    (
        "auto-source-not-acr",
        "ghcr.io",
        None,
        Target("dr.azurecr.io", RID),
        Strategy.COPY,
        "not an ACR",
    ),
]


@pytest.mark.parametrize(
    ("source", "source_id", "target", "expected", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_choose_strategy(
    source: str, source_id: str | None, target: Target, expected: Strategy, reason: str
) -> None:
    settings = Settings(source=source, targets=(target,), source_resource_id=source_id)
    choice = choose_strategy(settings, target)
    assert choice.strategy is expected
    assert reason in choice.reason
    assert choice.imports is (expected is Strategy.IMPORT)


# -- fallback that fits the cause --------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32
SOURCE = "src.azurecr.io"
DR = "dr.azurecr.io"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FakeImporter:
    """Refuses with ``refusal`` (or imports); counts the ARM calls it would make."""

    refusal: ImportUnavailableError | None = None
    calls: int = 0

    def import_image(self, job: CopyJob, target: Target, digest: str) -> CopyReport:
        self.calls += 1
        if self.refusal is not None:
            raise self.refusal
        return CopyReport(digest=digest, extra={"strategy": "import"})


@dataclass
class FakeCopier:
    copied: list[str] = field(default_factory=list)

    def copy_image(self, src: ImageRef, dst: ImageRef, *, repair: bool = False) -> CopyReport:
        self.copied.append(str(dst))
        return CopyReport(digest=str(src.digest), manifests_copied=3)


def copy_only(job: CopyJob, target: Target, digest: str) -> tuple[CopyReport, DeliveryPath]:
    """A ``Deliver`` that is not the worker's deliverer (it keeps no verdicts)."""
    return CopyReport(digest=digest), DeliveryPath.COPY


def refusal(reason: str = SOURCE_READ) -> ImportUnavailableError:
    return ImportUnavailableError(f"import refused: {reason} for contososrc", reason=reason)


def deliver_once(
    strategy: Strategy,
    importer: FakeImporter,
    copier: FakeCopier,
    verdicts: ImportVerdicts | None = None,
) -> tuple[CopyReport, str]:
    target = Target(DR, RID, strategy)
    settings = Settings(source=SOURCE, targets=(target,), source_resource_id=SRC_RID)
    job = CopyJob(Action.PUSH, SOURCE, DR, "team/app", DIGEST, "1.0")
    return replicate_with_strategy(
        job, target, DIGEST, importer=importer, copier=copier, settings=settings, verdicts=verdicts
    )


@pytest.mark.parametrize(
    "reason", [SOURCE_READ, TARGET_AUTHORIZATION, NETWORK, TOO_MANY_MANIFESTS, NOT_CONFIGURED]
)
def test_auto_copies_in_the_same_job_when_import_is_refused_and_says_why(reason: str) -> None:
    copier = FakeCopier()
    report, path = deliver_once(Strategy.AUTO, FakeImporter(refusal(reason)), copier)
    assert path == "copy"
    assert copier.copied == [f"{DR}/team/app:1.0@{DIGEST}"]
    assert report.manifests_copied == 3
    assert report.extra["fallback_from"] == "import"
    assert report.extra["fallback_reason_code"] == reason
    assert report.extra["fallback_reason"].startswith(f"copied, not imported ({reason}): ")
    assert "contososrc" in report.extra["fallback_reason"]


def test_strategy_import_never_falls_back() -> None:
    copier = FakeCopier()
    with pytest.raises(ImportUnavailableError, match="source-read"):
        deliver_once(Strategy.IMPORT, FakeImporter(refusal()), copier)
    assert copier.copied == []


def test_other_import_failures_are_not_copied() -> None:
    class Failing(FakeImporter):
        def import_image(self, job: CopyJob, target: Target, digest: str) -> CopyReport:
            raise PermanentRegistryError("ARM rejected the credential")

    copier = FakeCopier()
    with pytest.raises(PermanentRegistryError, match="credential"):
        deliver_once(Strategy.AUTO, Failing(), copier)
    assert copier.copied == []


def test_a_refusal_is_remembered_per_target_so_later_jobs_skip_arm() -> None:
    clock = Clock()
    verdicts = ImportVerdicts(timedelta(minutes=15), clock=clock)
    importer = FakeImporter(refusal(TARGET_AUTHORIZATION))
    for _ in range(3):
        report, path = deliver_once(Strategy.AUTO, importer, FakeCopier(), verdicts)
        assert path == "copy"
        assert report.extra["fallback_reason_code"] == TARGET_AUTHORIZATION
    assert importer.calls == 1  # one refused ARM call, then the verdict
    assert "import skipped until 03:19:05Z" in report.extra["fallback_reason"]
    (verdict,) = verdicts.snapshot()
    assert (verdict.target, verdict.reason) == (DR, TARGET_AUTHORIZATION)
    assert verdict.to_dict()["until"] == "2026-01-02T03:19:05+00:00"

    clock.now += timedelta(minutes=15)  # expired: ARM is asked again, and now it works
    importer.refusal = None
    report, path = deliver_once(Strategy.AUTO, importer, FakeCopier(), verdicts)
    assert (path, importer.calls) == ("import", 2)
    assert verdicts.snapshot() == ()


def test_a_refusal_for_one_image_is_not_remembered_for_the_target() -> None:
    verdicts = ImportVerdicts(clock=Clock())
    importer = FakeImporter(refusal(TOO_MANY_MANIFESTS))
    deliver_once(Strategy.AUTO, importer, FakeCopier(), verdicts)
    deliver_once(Strategy.AUTO, importer, FakeCopier(), verdicts)
    assert importer.calls == 2
    assert verdicts.snapshot() == ()


def test_strategy_import_asks_arm_each_time_but_the_verdict_is_shown() -> None:
    verdicts = ImportVerdicts(clock=Clock())
    importer = FakeImporter(refusal(SOURCE_READ))
    for _ in range(2):
        with pytest.raises(ImportUnavailableError):
            deliver_once(Strategy.IMPORT, importer, FakeCopier(), verdicts)
    assert importer.calls == 2
    assert [v.reason for v in verdicts.snapshot()] == [SOURCE_READ]


def test_verdicts_are_bounded_oldest_first() -> None:
    verdicts = ImportVerdicts(limit=2, clock=Clock())
    for host in ("a.azurecr.io", "b.azurecr.io", "c.azurecr.io"):
        verdicts.remember(host, refusal())
    assert [v.target for v in verdicts.snapshot()] == ["b.azurecr.io", "c.azurecr.io"]
    assert verdicts.current("a.azurecr.io") is None


def test_fallbacks_are_counted_with_their_reason() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_providers(provider)
    try:
        deliver_once(Strategy.AUTO, FakeImporter(refusal(NETWORK)), FakeCopier())
        points = counted(reader, "replication_fallbacks", "reason", "target")
    finally:
        telemetry.use_providers()
        provider.shutdown()
    assert points == [(NETWORK, DR, 1)]


def test_the_worker_deliverer_keeps_its_verdicts_for_status() -> None:
    target = Target(DR, RID)
    settings = Settings(source=SOURCE, targets=(target,), source_resource_id=SRC_RID)
    importer = FakeImporter(refusal(SOURCE_READ))
    planner = deliverer(settings, importer=importer, copier=FakeCopier())
    job = CopyJob(Action.PUSH, SOURCE, DR, "team/app", DIGEST, "1.0")
    planner(job, target, DIGEST)
    planner(job, target, DIGEST)
    assert importer.calls == 1
    (shown,) = import_verdicts(planner)
    assert shown["target"] == DR
    assert shown["reason"] == SOURCE_READ
    assert "contososrc" in shown["detail"]
    assert import_verdicts(copy_only) == []  # a deliverer without verdicts


def test_planned_path_says_which_path_and_why() -> None:
    auto, pinned = Target(DR, RID), Target(DR, RID, Strategy.IMPORT)
    settings = Settings(source=SOURCE, targets=(auto,), source_resource_id=SRC_RID)
    assert planned_path(settings, auto).imports
    copied = planned_path(settings, auto, "no read on contososrc")
    assert copied.strategy is Strategy.COPY
    assert "import refused: no read on contososrc" in copied.reason
    failing = planned_path(settings, pinned, "no read on contososrc")
    assert failing.strategy is Strategy.IMPORT
    assert "it fails: no read on contososrc" in failing.reason


def test_foreseen_refusal_for_doctor() -> None:
    target = Target(DR, RID)
    same_tenant = Settings(source=SOURCE, targets=(target,), source_resource_id=SRC_RID)
    no_read = foreseen_refusal(same_tenant, target, can_import=True, can_read_source=False)
    assert no_read is not None and no_read.reason == SOURCE_READ
    assert f"source registry {SOURCE}" in no_read.detail
    no_import = foreseen_refusal(same_tenant, target, can_import=False, can_read_source=True)
    assert no_import is not None and no_import.reason == TARGET_AUTHORIZATION
    assert f"target registry {DR}" in no_import.detail
    assert foreseen_refusal(same_tenant, target, can_import=True, can_read_source=True) is None
    assert foreseen_refusal(same_tenant, target, can_import=None, can_read_source=None) is None
    by_uri = Settings(source=SOURCE, targets=(target,))  # no resource id: ARM reads nothing
    assert foreseen_refusal(by_uri, target, can_import=True, can_read_source=False) is None
