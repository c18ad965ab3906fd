"""A registry's size from ARM: ``GET .../registries/{name}/listUsages``
(``Microsoft.ContainerRegistry/registries/listUsages/read``, e.g. Reader), the usage named
``Size`` in ``Bytes`` (azure-rest-api-specs Microsoft.ContainerRegistry ``RegistryUsage``:
``name``, ``limit``, ``currentValue``, ``unit`` Count | Bytes; example
Registry/stable/2025-11-01/examples/RegistryListUsages.json). doctor's backfill ETA in bytes
takes it as what a full copy moves (every blob once; ACR stores each blob once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    from replicator.adapters.acr.arm import RegistryId


def registry_bytes(client: ContainerRegistryManagementClient, rid: RegistryId) -> int | None:
    """The registry's stored bytes (``None``: ARM lists no ``Size`` usage)."""
    usages = client.registries.list_usages(rid.resource_group, rid.name)
    for usage in usages.value or []:
        unit = str(getattr(usage.unit, "value", usage.unit) or "")
        if (usage.name or "").lower() == "size" and unit.lower() == "bytes":
            value = usage.current_value
            return value if isinstance(value, int) and value >= 0 else None
    return None
