"""doctor's budget plan: per registry the budget the fleet paces at and where it comes
from, a warning where the SKU assumed is not ARM's, and the image jobs a minute."""

from __future__ import annotations

import json

from replicator.app.doctor.budget_checks import budget_checks
from replicator.app.doctor.verdicts import CheckStatus
from replicator.domain.config import load_settings


def test_the_budget_plan_per_registry_and_for_arm() -> None:
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": "src.azurecr.io",
            "REPLICATOR_TARGETS": "dr.azurecr.io,mirror.example.com",
            "REPLICATOR_REGISTRY_SKUS": "src.azurecr.io=Premium",
            "REPLICATOR_RATE_LIMITS": json.dumps({"mirror.example.com": {"write": 120}}),
        }
    )
    checks = {c.registry: c for c in budget_checks(settings, {"src.azurecr.io": "Premium"})}
    source = checks["src.azurecr.io"]
    assert source.status is CheckStatus.PASS
    assert "SKU Premium (REPLICATOR_REGISTRY_SKUS), share 0.5: read 10000" in source.detail
    assert "referrers 1000" in source.detail
    target = checks["dr.azurecr.io"]
    assert "SKU Standard (assumed: not in REPLICATOR_REGISTRY_SKUS), share 1" in target.detail
    assert "write 1000" in target.detail  # one identity's row
    assert checks["mirror.example.com"].detail.startswith("target: write 120 a minute")
    assert "about 7 image jobs a minute" in checks["arm"].detail  # 120 writes / 16 a job


def test_a_sku_that_is_not_armss_warns_with_the_setting_to_fix() -> None:
    settings = load_settings(
        {"REPLICATOR_SOURCE": "src.azurecr.io", "REPLICATOR_TARGETS": "b.example.com"}
    )
    checks = {c.registry: c for c in budget_checks(settings, {"src.azurecr.io": "Premium"})}
    source = checks["src.azurecr.io"]
    assert source.status is CheckStatus.WARN
    assert "ARM says the registry is Premium" in source.detail
    assert '"src.azurecr.io": "Premium"' in source.fix
    assert checks["b.example.com"].detail.startswith("no budget")
