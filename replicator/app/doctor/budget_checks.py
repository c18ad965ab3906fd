"""doctor's budget plan (issue 17): per registry, the request budget the fleet will pace
at (bucket, requests a minute), where it comes from (``REPLICATOR_RATE_LIMITS``, else the
SKU's published row times the share, capped per identity), and the image jobs a minute
it sustains; a warning where the SKU the settings assume is not the one ARM reports (the
budget would be too small, or, worse, too large)."""

from __future__ import annotations

from collections.abc import Mapping

from replicator.app.doctor.verdicts import Check, CheckStatus
from replicator.domain.budgets import ARM, BUCKETS, jobs_per_minute, limits_for
from replicator.domain.config import Settings
from replicator.domain.model import is_acr_host


def budget_checks(settings: Settings, arm_skus: Mapping[str, str | None]) -> list[Check]:
    """``arm_skus``: the SKU ARM reported per login server (None: not asked or unknown)."""
    checks = []
    for registry in [settings.source, *(t.login_server for t in settings.targets)]:
        checks.append(_registry(settings, registry, arm_skus.get(registry)))
    arm = limits_for(settings, ARM)
    per_minute = jobs_per_minute(settings)
    checks.append(
        Check(
            ARM,
            "budget",
            CheckStatus.PASS,
            f"ImportImage calls paced at {arm.write:g} a minute (REPLICATOR_RATE_LIMITS "
            f'"arm", else ARM\'s published 10 writes a second); the budgets sustain about '
            f"{per_minute} image jobs a minute, {per_minute * 60} an hour",
        )
    )
    return checks


def _registry(settings: Settings, registry: str, arm_sku: str | None) -> Check:
    role = "source" if registry == settings.source else "target"
    share = settings.source_share if role == "source" else settings.target_share
    budget = limits_for(settings, registry)
    configured = settings.rate_limits.get(registry)
    plan = ", ".join(f"{b} {r:g}" for b in BUCKETS if (r := budget.rate(b)) is not None)
    if not is_acr_host(registry):
        if not plan:
            return Check(
                registry,
                "budget",
                CheckStatus.PASS,
                f"no budget: not an ACR and not in REPLICATOR_RATE_LIMITS ({role}, not paced)",
                fix="set REPLICATOR_RATE_LIMITS for it if the registry publishes limits",
            )
        return Check(
            registry,
            "budget",
            CheckStatus.PASS,
            f"{role}: {plan} a minute (REPLICATOR_RATE_LIMITS times the share {share:g})",
        )
    assumed = settings.skus.get(registry)
    sku = assumed or "Standard"
    origin = "REPLICATOR_REGISTRY_SKUS" if assumed else "assumed: not in REPLICATOR_REGISTRY_SKUS"
    detail = (
        f"{role}: SKU {sku} ({origin}), share {share:g}: {plan} a minute"
        + (" (REPLICATOR_RATE_LIMITS where it says)" if configured else "")
        + ", at most one identity's row"
    )
    if arm_sku and arm_sku.capitalize() != sku:
        return Check(
            registry,
            "budget",
            CheckStatus.WARN,
            detail + f"; ARM says the registry is {arm_sku}",
            fix=f'set REPLICATOR_REGISTRY_SKUS to include "{registry}": "{arm_sku}" '
            "(the deployment fills it from the registry's sku.name)",
        )
    return Check(registry, "budget", CheckStatus.PASS, detail)
