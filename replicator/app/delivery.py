"""Delivery of one image to one target along the path ``replicator.domain.strategy`` chose.

Under ``auto`` it also copies, in the same job, when the import is refused for a reason a
copy can overcome (``ImportUnavailableError``: no read on the source, no import right on
the target, a network refusal, too many manifests): the report, and so the status row and
the log, say why, and ``replication_fallbacks`` counts it. A refusal that holds for the
whole target is remembered for a while (:class:`ImportVerdicts`), so later jobs copy at
once instead of paying a refused ARM call each. ``import`` never falls back: the refusal
is the job's permanent failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from replicator.adapters.acr.errors import (
    SOURCE_READ,
    TARGET_AUTHORIZATION,
    TOO_MANY_MANIFESTS,
    ImportUnavailableError,
    source_read_hint,
    target_role_hint,
)
from replicator.adapters.acr.reach import DataPlaneReach
from replicator.adapters.azure.telemetry import record_fallback, span
from replicator.app.ports import DeliveryPath
from replicator.domain.config import Settings
from replicator.domain.expiring import Expiring
from replicator.domain.identities import identity_of
from replicator.domain.model import Strategy, utcnow
from replicator.domain.strategy import Choice, choose_strategy

if TYPE_CHECKING:
    from replicator.app.ports import Copier, Deliver, Importer
    from replicator.domain.model import CopyJob, CopyReport, Target
    from replicator.domain.reference import ImageRef

log = logging.getLogger(__name__)

VERDICT_TTL = timedelta(minutes=15)
VERDICT_LIMIT = 256  # targets remembered at most (a deployment has a handful)
# Refusals that hold for one image only: never remembered for the whole target.
_PER_IMAGE = frozenset({TOO_MANY_MANIFESTS})


@dataclass(frozen=True)
class Verdict:
    """ "Import cannot work for this target", learnt from a refusal, until ``until``."""

    target: str
    reason: str  # one of replicator.adapters.acr.errors.FALLBACK_REASONS
    detail: str  # the refusal, with the registry and the role that is missing
    since: datetime
    until: datetime

    def to_dict(self) -> dict[str, str]:
        return {
            "target": self.target,
            "reason": self.reason,
            "detail": self.detail,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
        }


class ImportVerdicts:
    """Per target, the last "import cannot work here" verdict, for ``ttl``. In-process,
    bounded to ``limit`` targets (the oldest goes first), safe across worker threads."""

    def __init__(
        self,
        ttl: timedelta = VERDICT_TTL,
        *,
        limit: int = VERDICT_LIMIT,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._verdicts: Expiring[Verdict] = Expiring(ttl, limit=limit, clock=clock)

    def remember(self, target: str, error: ImportUnavailableError) -> Verdict | None:
        """Keep ``error`` as the target's verdict, unless it holds for one image only."""
        if error.reason in _PER_IMAGE:
            return None
        now = self._verdicts.clock()
        verdict = Verdict(target, error.reason, str(error)[:500], now, now + self._verdicts.ttl)
        self._verdicts.put(target, verdict)
        return verdict

    def current(self, target: str) -> Verdict | None:
        """The target's verdict if it still holds (an expired one is dropped)."""
        found = self._verdicts.get(target)
        return None if found is None else found[1]

    def forget(self, target: str) -> None:
        self._verdicts.forget(target)

    def snapshot(self) -> tuple[Verdict, ...]:
        """Every verdict that still holds, oldest first."""
        return self._verdicts.values()


@dataclass(frozen=True)
class Refusal:
    """Why ARM would refuse an import, foreseen from the identity's permissions."""

    reason: str  # one of replicator.adapters.acr.errors.FALLBACK_REASONS
    detail: str


def foreseen_refusal(
    settings: Settings,
    target: Target,
    *,
    can_import: bool | None,
    can_read_source: bool | None,
) -> Refusal | None:
    """For doctor: the refusal an import into ``target`` would meet, from what the
    identity may do (``None``: not known). Read on the source matters only where the
    source is named by resource id (same tenant); across tenants ARM pulls with the token."""
    by_id = (
        bool(settings.source_resource_id)
        and not identity_of(settings, settings.source).cross_tenant
    )
    if by_id and can_read_source is False:
        return Refusal(SOURCE_READ, source_read_hint(settings.source))
    if can_import is False:
        return Refusal(TARGET_AUTHORIZATION, target_role_hint(target.login_server))
    return None


def replicate_with_strategy(
    job: CopyJob,
    target: Target,
    digest: str,
    *,
    importer: Importer | None,
    copier: Copier,
    settings: Settings | None = None,
    verdicts: ImportVerdicts | None = None,
) -> tuple[CopyReport, DeliveryPath]:
    """Deliver one image to ``target``; returns the report and the path that ran. A repair
    job always copies: only the copy checks each blob and child the target holds."""
    choice = _choice(job, target, settings)
    src = job.source_ref.with_digest(digest)
    dst = src.with_registry(target.login_server)
    if job.repair:
        with span("copy", source=str(src), target=str(dst), repair=True):
            return copier.copy_image(src, dst, repair=True), DeliveryPath.COPY
    if not choice.imports or importer is None:
        with span("copy", source=str(src), target=str(dst)):
            return copier.copy_image(src, dst), DeliveryPath.COPY
    known = verdicts.current(target.login_server) if verdicts is not None else None
    if known is not None and target.strategy is Strategy.AUTO:
        detail = f"import skipped until {known.until:%H:%M:%SZ}: {known.detail}"
        return _fall_back(copier, src, dst, known.reason, detail), DeliveryPath.COPY
    try:
        with span("import", source=str(src), target=str(dst)):
            report = importer.import_image(job, target, digest)
    except ImportUnavailableError as exc:
        if verdicts is not None:
            verdicts.remember(target.login_server, exc)
        if target.strategy is Strategy.IMPORT:
            raise
        return _fall_back(copier, src, dst, exc.reason, str(exc)), DeliveryPath.COPY
    if verdicts is not None:
        verdicts.forget(target.login_server)
    return report, DeliveryPath.IMPORT


def _fall_back(
    copier: Copier, src: ImageRef, dst: ImageRef, reason: str, detail: str
) -> CopyReport:
    log.warning(
        "import into %s not used (%s): copying over the data plane: %s",
        dst,
        reason,
        detail,
        extra={"fallback_reason": reason, "target": dst.registry},
    )
    record_fallback(dst.registry, reason)
    imported = DeliveryPath.IMPORT.value
    with span("copy", source=str(src), target=str(dst), fallback_from=imported, reason=reason):
        report = copier.copy_image(src, dst)
    extra = {
        **report.extra,
        "fallback_from": imported,
        "fallback_reason_code": reason,
        "fallback_reason": f"copied, not imported ({reason}): {detail}"[:500],
    }
    return _with_extra(report, extra)


@dataclass(frozen=True)
class Planner:
    """The ``Deliver`` port: plans per target and remembers import verdicts."""

    settings: Settings
    importer: Importer | None
    copier: Copier
    verdicts: ImportVerdicts = field(default_factory=ImportVerdicts)
    reach: DataPlaneReach = field(default_factory=DataPlaneReach)

    def __call__(
        self, job: CopyJob, target: Target, digest: str
    ) -> tuple[CopyReport, DeliveryPath]:
        return replicate_with_strategy(
            job,
            target,
            digest,
            importer=self.importer,
            copier=self.copier,
            settings=self.settings,
            verdicts=self.verdicts,
        )


def deliverer(
    settings: Settings,
    *,
    importer: Importer | None,
    copier: Copier,
    verdicts: ImportVerdicts | None = None,
    reach: DataPlaneReach | None = None,
) -> Planner:
    """A ``Runtime.deliver`` that plans per target. ``reach``: the importer's memory of
    unreachable data planes (``AcrImporters.reach``, which ``build_runtime`` passes), so
    the worker's check before an import and the importer's after it learn from each
    other; a fresh one when None."""
    return Planner(
        settings,
        importer,
        copier,
        ImportVerdicts() if verdicts is None else verdicts,
        DataPlaneReach() if reach is None else reach,
    )


def import_reach(deliver: Deliver | None, target: Target) -> DataPlaneReach | None:
    """When ``deliver`` will import into ``target`` (strategy ``import``, or ``auto`` that
    chose import and holds no verdict against it), the memory of unreachable data planes:
    the target's data plane is then optional to the worker. None when a copy may run, which
    needs it (and for a ``deliver`` that is no ``Planner``: it may copy)."""
    if not isinstance(deliver, Planner) or deliver.importer is None:
        return None
    if not choose_strategy(deliver.settings, target).imports:
        return None
    if target.strategy is Strategy.AUTO and deliver.verdicts.current(target.login_server):
        return None
    return deliver.reach


def import_verdicts(deliver: Deliver | None) -> list[dict[str, str]]:
    """The verdicts a runtime's ``deliver`` holds (for ``status``); none for another one."""
    verdicts: Any = getattr(deliver, "verdicts", None)
    if not isinstance(verdicts, ImportVerdicts):
        return []
    return [verdict.to_dict() for verdict in verdicts.snapshot()]


def _choice(job: CopyJob, target: Target, settings: Settings | None) -> Choice:
    if settings is None:
        settings = Settings(source=job.source, targets=(target,))
    return choose_strategy(settings, target)


def _with_extra(report: CopyReport, extra: dict[str, str]) -> CopyReport:
    return replace(report, extra=extra)
