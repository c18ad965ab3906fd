"""``build_runtime`` (the composition root) plugs the adapters into every port the app
reaches the world through, the sweep cursors and the referrer listings included, and the
worker's deliverer shares the importer's memory of unreachable data planes. Nothing here
connects: the adapters are only built."""

from __future__ import annotations

from replicator.adapters.acr.importer import AcrImporters
from replicator.adapters.azure.cursors import TableCursors
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.referrer_lister import RegistryReferrers
from replicator.app.delivery import Planner
from replicator.app.runtime import build_runtime
from replicator.domain.config import load_settings

AZURITE = "UseDevelopmentStorage=true"  # the adapters are built, never called


def test_the_runtime_has_cursors_and_referrer_listings_and_shares_the_importers_reach() -> None:
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": "src.azurecr.io",
            "REPLICATOR_TARGETS": '[{"login_server": "dr.azurecr.io", "strategy": "import", '
            '"resource_id": "/subscriptions/0/resourceGroups/rg/providers/'
            'Microsoft.ContainerRegistry/registries/drregistry"}]',
            "REPLICATOR_SOURCE_RESOURCE_ID": "/subscriptions/0/resourceGroups/rg/providers/"
            "Microsoft.ContainerRegistry/registries/srcregistry",
            "AzureWebJobsStorage": AZURITE,
        },
        require_storage=True,
    )
    runtime = build_runtime(settings)
    try:
        assert isinstance(runtime.cursors, TableCursors)
        assert isinstance(runtime.status, TableStatusStore)
        assert runtime.cursors.store is runtime.status
        assert isinstance(runtime.referrers, RegistryReferrers)
        assert runtime.referrers.registries is runtime.registries
        (importer,) = runtime.closing
        assert isinstance(importer, AcrImporters) and isinstance(runtime.deliver, Planner)
        assert runtime.deliver.reach is importer.reach
    finally:
        runtime.close()
