"""doctor's budget plan (issue 17): per registry, the request budget the fleet will pace
at (bucket, requests a minute), where it comes from (``REPLICATOR_RATE_LIMITS``, else the
SKU's published row times the share, capped per identity), and the image jobs a minute
it sustains; a warning where the SKU the settings assume is not the one ARM reports (the
budget would be too small, or, worse, too large). Given the app (``--app``), the deployed
app's scale settings and what they mean against the budget; with ``--backfill``, one
listing of the source (catalog + tags, as reconcile lists) and how long a full backfill
takes at the budget, in requests and, with the registry's size from ARM and a copy
throughput, in bytes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError

from replicator.adapters.acr.arm import RegistryId, management_client
from replicator.adapters.acr.usage import registry_bytes
from replicator.adapters.azure.credentials import credential_from
from replicator.adapters.azure.functionapp import QueueConcurrency, SiteId, app_scale
from replicator.adapters.oci.listing import RegistryLister
from replicator.app.doctor import verdicts
from replicator.app.doctor.verdicts import Check, CheckStatus
from replicator.domain.backfill import (
    AppScale,
    BackfillEta,
    SourceCount,
    backfill_eta,
    duration,
    size,
)
from replicator.domain.budgets import ARM, BUCKETS, jobs_per_minute, limits_for
from replicator.domain.config import Settings
from replicator.domain.errors import InvalidReferenceError
from replicator.domain.filters import Filters, may_hold_allowed
from replicator.domain.identities import identity_of
from replicator.domain.model import is_acr_host

if TYPE_CHECKING:
    from replicator.adapters.oci.registries import Registries


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


# -- the whole plan: the deployed app's scale and a full backfill's ETA ---------------------
@dataclass(frozen=True)
class PlanOptions:
    """What ``doctor`` was given for the plan: the function app's ARM id (``--app``, else
    the deployment's ``AZURE_FUNCTION_APP_ID``), whether to list the source for the
    backfill ETA (``--backfill``), and the fleet's copy throughput in MiB/s."""

    app_id: str | None = None
    backfill: bool = False
    mib_per_second: float | None = None
    queue: QueueConcurrency = field(default_factory=QueueConcurrency)


def plan_checks(
    settings: Settings, registries: Registries, options: PlanOptions, arm_kwargs: dict[str, Any]
) -> list[Check]:
    checks: list[Check] = []
    scale: AppScale | None = None
    if options.app_id:
        check, scale = _scale(settings, options, arm_kwargs)
        checks.append(check)
    if options.backfill:
        checks.append(_backfill(settings, registries, options, scale, arm_kwargs))
    return checks


def _arm_client(settings: Settings, subscription: str, arm_kwargs: dict[str, Any]) -> Any:
    credential = credential_from(settings.identity, identity_of(settings, settings.source))
    if credential is None:
        return None
    return management_client(credential, settings.arm_endpoint, subscription, **arm_kwargs)


def _scale(
    settings: Settings, options: PlanOptions, arm_kwargs: dict[str, Any]
) -> tuple[Check, AppScale | None]:
    assert options.app_id is not None
    try:
        site = SiteId.parse(options.app_id)
    except InvalidReferenceError as exc:
        return Check("app", "scale", CheckStatus.FAIL, str(exc), fix=_APP_FIX), None
    client = _arm_client(settings, site.subscription, arm_kwargs)
    if client is None:
        detail = "no Azure identity to read the app's scale settings with"
        return Check(site.name, "scale", CheckStatus.WARN, detail, fix=_APP_FIX), None
    with client:
        try:
            scale = app_scale(client, site, options.queue)
        except (HttpResponseError, AzureError) as exc:
            detail = f"could not read the app's scale settings: {_first_line(exc)}"
            fix = "doctor needs Microsoft.Web/sites/read on the app (Reader)"
            return Check(site.name, "scale", CheckStatus.WARN, detail, fix=fix), None
    return Check(site.name, "scale", CheckStatus.PASS, _scale_text(settings, scale)), scale


_APP_FIX = (
    "give --app the function app's ARM id (azd: the AZURE_FUNCTION_APP_ID output, which "
    "doctor also reads from the environment)"
)


def _scale_text(settings: Settings, scale: AppScale) -> str:
    per_minute = jobs_per_minute(settings)
    instances = scale.maximum_instance_count
    memory = f"{scale.instance_memory_mb} MB" if scale.instance_memory_mb else "memory not set"
    head = (
        f"functionAppConfig.scaleAndConcurrency: up to {instances} instances of {memory}"
        if instances
        else "no functionAppConfig.scaleAndConcurrency (not a Flex Consumption app?)"
    )
    queue = f"{scale.jobs_per_instance} jobs at once per instance (host.json batchSize "
    queue += f"{scale.batch_size} + newBatchThreshold)"
    if scale.slots is None:
        return f"{head}; {queue}"
    seconds = scale.slots / per_minute * 60
    return (
        f"{head}; {queue}: {scale.slots} jobs in flight at most; the budgets' "
        f"{per_minute} jobs a minute, not the fleet, bound the rate while a job takes under "
        f"{seconds:.0f} s (past that the fleet is the bound: raise maximumInstanceCount)"
    )


def _backfill(
    settings: Settings,
    registries: Registries,
    options: PlanOptions,
    scale: AppScale | None,
    arm_kwargs: dict[str, Any],
) -> Check:
    filters = Filters(settings.include, settings.exclude)
    lister = RegistryLister(registries.client(settings.source), settings.source)
    listing = lister.listing(
        allows=filters.allows, wanted=lambda repo: may_hold_allowed(filters, repo)
    )
    if "" in listing.failed:
        detail = f"could not list the source for the backfill ETA: {listing.errors[0]}"
        return Check(settings.source, "backfill", CheckStatus.WARN, detail, fix=verdicts.PULL_FIX)
    count = SourceCount(
        repositories=listing.repositories,
        tags=len(listing.entries),
        manifests=len({e.digest for e in listing.entries}),
        listing_requests=listing.requests,
        unread=len(listing.failed),
    )
    size, size_note = _source_bytes(settings, arm_kwargs)
    eta = backfill_eta(
        count,
        jobs_per_minute=jobs_per_minute(settings),
        source_budget=limits_for(settings, settings.source),
        scale=scale,
        bytes_total=size,
        mib_per_second=options.mib_per_second,
    )
    detail = backfill_text(count, eta, options.mib_per_second, size_note)
    if count.unread:
        fix = f"{count.unread} repositories could not be read and are not counted: check pull"
        return Check(settings.source, "backfill", CheckStatus.WARN, detail, fix=fix)
    return Check(settings.source, "backfill", CheckStatus.PASS, detail)


def _source_bytes(settings: Settings, arm_kwargs: dict[str, Any]) -> tuple[int | None, str]:
    if not settings.source_resource_id:
        return None, "size unknown (no REPLICATOR_SOURCE_RESOURCE_ID to ask ARM)"
    rid = RegistryId.parse(settings.source_resource_id)
    client = _arm_client(settings, rid.subscription, arm_kwargs)
    if client is None:
        return None, "size unknown (no Azure identity)"
    with client:
        try:
            size = registry_bytes(client, rid)
        except (HttpResponseError, AzureError) as exc:
            return None, f"size unknown (listUsages: {_first_line(exc)})"
    return size, "" if size is not None else "size unknown (ARM lists no Size usage)"


def backfill_text(
    count: SourceCount, eta: BackfillEta, mib_per_second: float | None, size_note: str = ""
) -> str:
    need = eta.source_requests
    text = (
        f"a full backfill: {count.tags} tags ({count.manifests} distinct manifests) in "
        f"{count.repositories} repositories, {count.listing_requests} listing requests; "
        f"about {need.read or 0:g} reads and {need.referrers or 0:g} referrers calls on the "
        f"source; at {eta.jobs_per_minute} jobs a minute: {duration(eta.minutes)}"
        f" ({'the job pace' if eta.bound == 'jobs' else f'the source {eta.bound} budget'}"
        " is the bound)"
    )
    if eta.bytes_total is None:
        return f"{text}; bytes: {size_note}"
    text += f"; {size(eta.bytes_total)} stored"
    if eta.bytes_minutes is None:
        return text + (
            " (give --copy-mib-per-second, the fleet's copy throughput, for the time the "
            "bytes take through copy targets: ACR publishes no bandwidth figure)"
        )
    return text + (
        f": {duration(eta.bytes_minutes)} through copy targets at {mib_per_second:g} MiB/s"
        " (import targets move them server-side)"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
