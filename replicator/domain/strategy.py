"""The copy-strategy choice, per target: ARM import or data-plane copy, with a reason.

``auto`` imports where both ends are ACR (an ACR login server, or an ARM resource id
configured for it) and the target has a ``resource_id``; it copies otherwise. What happens
when an import is refused (the fallback to a copy, the remembered verdicts) is
``replicator.app.delivery``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from replicator.domain.config import Settings
from replicator.domain.model import Strategy, Target, is_acr_host


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


def planned_path(settings: Settings, target: Target, refusal: str | None = None) -> Choice:
    """The path an image will take and why, given what is known to refuse an import
    (``refusal``: a verdict's detail, or what doctor found; None when nothing refuses)."""
    choice = choose_strategy(settings, target)
    if not choice.imports or refusal is None:
        return choice
    if target.strategy is Strategy.IMPORT:
        return Choice(Strategy.IMPORT, f"strategy import is configured, and it fails: {refusal}")
    return Choice(Strategy.COPY, f"auto: copied over the data plane, import refused: {refusal}")
