"""The deployed function app's scale settings, read through ARM (doctor's budget plan).

``GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}``
(``Microsoft.Web/sites/read``, e.g. Reader) answers ``properties.functionAppConfig.
scaleAndConcurrency`` on the Flex Consumption plan: ``maximumInstanceCount``,
``instanceMemoryMB`` (integers), ``alwaysReady`` and ``triggers.http.perInstanceConcurrency``
(azure-rest-api-specs, specification/web/resource-manager/Microsoft.Web/AppService,
``FunctionAppConfig`` / ``FunctionsScaleAndConcurrency``; the response of
examples/2025-03-01/CreateOrUpdateFunctionAppFlexConsumptionWithDetails.json). The queue
trigger's per-instance concurrency is not an ARM property: it is host.json's
``extensions.queues`` (``batchSize`` + ``newBatchThreshold``), read from the package.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replicator.adapters.acr.arm import arm_get_json
from replicator.domain.backfill import DEFAULT_BATCH_SIZE, AppScale
from replicator.domain.errors import InvalidReferenceError

if TYPE_CHECKING:
    from pathlib import Path

    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

SITES_API = "2024-04-01"  # the version infra/modules/functionapp.bicep deploys with
MAX_SITE_BYTES = 1024 * 1024  # a site document is a few KiB
MAX_HOST_JSON_BYTES = 64 * 1024
_SITE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.Web/sites/(?P<name>[A-Za-z0-9-]{2,60})$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SiteId:
    subscription: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, resource_id: str) -> SiteId:
        match = _SITE_ID.match((resource_id or "").strip())
        if not match:
            raise InvalidReferenceError(
                f"not an ARM function app id (/subscriptions/<id>/resourceGroups/<group>/"
                f"providers/Microsoft.Web/sites/<name>): {resource_id!r}"
            )
        return cls(match["sub"], match["rg"], match["name"])

    def __str__(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Web/sites/{self.name}"
        )


@dataclass(frozen=True)
class QueueConcurrency:
    batch_size: int = DEFAULT_BATCH_SIZE
    new_batch_threshold: int | None = None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def queue_concurrency(host_json: Path) -> QueueConcurrency:
    """host.json's ``extensions.queues`` (the Functions defaults where it is silent or
    the file is missing or unreadable)."""
    try:
        with host_json.open("rb") as handle:
            raw = handle.read(MAX_HOST_JSON_BYTES + 1)
        loaded = json.loads(raw) if len(raw) <= MAX_HOST_JSON_BYTES else {}
    except (OSError, ValueError):
        return QueueConcurrency()
    queues = ((loaded if isinstance(loaded, dict) else {}).get("extensions") or {}).get("queues")
    if not isinstance(queues, dict):
        return QueueConcurrency()
    return QueueConcurrency(
        _count(queues.get("batchSize")) or DEFAULT_BATCH_SIZE,
        _count(queues.get("newBatchThreshold")),
    )


def app_scale(
    client: ContainerRegistryManagementClient, site: SiteId, queue: QueueConcurrency
) -> AppScale:
    """The app's ``scaleAndConcurrency`` (``None`` where ARM leaves a figure out: an app
    not on Flex Consumption has no ``functionAppConfig``)."""
    loaded = arm_get_json(client, f"{site}?api-version={SITES_API}", limit=MAX_SITE_BYTES)
    props = (loaded if isinstance(loaded, dict) else {}).get("properties") or {}
    config = (props.get("functionAppConfig") or {}) if isinstance(props, dict) else {}
    scale = (config.get("scaleAndConcurrency") or {}) if isinstance(config, dict) else {}
    if not isinstance(scale, dict):
        scale = {}
    return AppScale(
        maximum_instance_count=_count(scale.get("maximumInstanceCount")),
        instance_memory_mb=_count(scale.get("instanceMemoryMB")),
        batch_size=queue.batch_size,
        new_batch_threshold=queue.new_batch_threshold,
    )
