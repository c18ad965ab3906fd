"""The copy-strategy planner: ARM import or data-plane copy, per target, with a reason.

``auto`` imports where both ends are ACR (an ACR login server, or an ARM resource id
configured for it) and the target has a ``resource_id``; it copies otherwise, and copies
after an import error that a copy can overcome (``ImportUnavailableError``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from replicator.model import Strategy, is_acr_host
from replicator.telemetry import span

if TYPE_CHECKING:
    from replicator.config import Settings
    from replicator.model import CopyJob, Target
    from replicator.ports import Copier, CopyReport, Importer

log = logging.getLogger(__name__)

# (job, target, digest) -> (what the copy did, which path ran: "import" | "copy")
Deliver = Callable[["CopyJob", "Target", str], tuple["CopyReport", str]]


@dataclass(frozen=True)
class Choice:
    """The path a target gets (``IMPORT`` or ``COPY``, never ``AUTO``) and why."""

    strategy: Strategy
    reason: str

    @property
    def imports(self) -> bool:
        return self.strategy is Strategy.IMPORT


def source_is_acr(settings: Settings) -> bool:
    return is_acr_host(settings.source) or settings.source_resource_id is not None


def choose_strategy(settings: Settings, target: Target) -> Choice:
    if target.strategy is Strategy.COPY:
        return Choice(Strategy.COPY, "strategy copy is configured")
    if target.strategy is Strategy.IMPORT:
        return Choice(Strategy.IMPORT, "strategy import is configured")
    if not source_is_acr(settings):
        return Choice(Strategy.COPY, f"auto: the source {settings.source} is not an ACR")
    if not target.resource_id:
        return Choice(Strategy.COPY, f"auto: {target.login_server} has no resource_id")
    return Choice(Strategy.IMPORT, "auto: both ends are ACR and the target has a resource_id")


def replicate_with_strategy(
    job: CopyJob,
    target: Target,
    digest: str,
    *,
    importer: Importer | None,
    copier: Copier,
    settings: Settings | None = None,
) -> tuple[CopyReport, str]:
    """Deliver one image to ``target``; returns the report and the path that ran."""
    from replicator.acr.errors import ImportUnavailableError

    choice = _choice(job, target, settings)
    src = job.source_ref.with_digest(digest)
    dst = src.with_registry(target.login_server)
    if not choice.imports or importer is None:
        with span("copy", source=str(src), target=str(dst)):
            return copier.copy_image(src, dst), "copy"
    try:
        with span("import", source=str(src), target=str(dst)):
            return importer.import_image(job, target, digest), "import"
    except ImportUnavailableError as exc:
        if target.strategy is Strategy.IMPORT:
            raise
        log.warning("import into %s cannot work (%s): copying over the data plane", dst, exc)
        with span("copy", source=str(src), target=str(dst), fallback_from="import"):
            report = copier.copy_image(src, dst)
        extra = {**report.extra, "fallback_from": "import", "fallback_reason": str(exc)[:500]}
        return _with_extra(report, extra), "copy"


def deliverer(settings: Settings, *, importer: Importer | None, copier: Copier) -> Deliver:
    """A ``Runtime.deliver`` that plans per target."""

    def deliver(job: CopyJob, target: Target, digest: str) -> tuple[CopyReport, str]:
        return replicate_with_strategy(
            job, target, digest, importer=importer, copier=copier, settings=settings
        )

    return deliver


def _choice(job: CopyJob, target: Target, settings: Settings | None) -> Choice:
    if settings is not None:
        return choose_strategy(settings, target)
    from replicator.config import Settings as _Settings

    return choose_strategy(_Settings(source=job.source, targets=(target,)), target)


def _with_extra(report: CopyReport, extra: dict[str, str]) -> CopyReport:
    return replace(report, extra=extra)
