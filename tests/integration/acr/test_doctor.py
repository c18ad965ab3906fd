"""``acr-replicator doctor`` against the ARM, managed identity and Entra doubles and real
local registries, with the registries in each shape the seed's caveats describe."""

from __future__ import annotations

import json
from typing import Any

import pytest
from doubles.arm import ArmPair
from doubles.identity import FED_APP, FUNCTION_MI, OTHER, App, EntraDouble

from replicator.cli import main


def doctor(
    pair: ArmPair,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    strategy: str = "import",
    **extra: str,
) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
    for key, value in pair.env(strategy, **extra).items():
        monkeypatch.setenv(key, value)
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is (code == 0)
    return code, {(c["registry"], c["check"]): c for c in report["checks"]}


def statuses(checks: dict[tuple[str, str], dict[str, Any]], host: str) -> dict[str, str]:
    return {name: c["status"] for (registry, name), c in checks.items() if registry == host}


@pytest.fixture
def readable(pair: ArmPair) -> ArmPair:
    """The identity may also read the source's settings (Reader), as doctor needs."""
    pair.arm.assign(FUNCTION_MI, "Reader", pair.source)
    return pair


def test_a_healthy_premium_pair_passes_everything(
    readable: ArmPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks = doctor(readable, monkeypatch, capsys)
    assert code == 0
    assert statuses(checks, readable.source.host) == {
        "identity": "pass",
        "reachable": "pass",
        "pull": "pass",
        "resource-id": "pass",
        "sku": "pass",
        "network": "pass",
        "export-policy": "pass",
    }
    assert statuses(checks, readable.target.host) == {
        "identity": "pass",
        "reachable": "pass",
        "push": "pass",
        "resource-id": "pass",
        "sku": "pass",
        "network": "pass",
        "import-role": "pass",
        "strategy": "pass",
    }
    assert checks[(readable.target.host, "strategy")]["detail"].startswith("import:")


def test_basic_sku_warns_with_what_it_rules_out(
    readable: ArmPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readable.target.sku = "Basic"
    code, checks = doctor(readable, monkeypatch, capsys, strategy="auto")
    sku = checks[(readable.target.host, "sku")]
    assert code == 0
    assert sku["status"] == "warn"
    assert "no anonymous pull" in sku["detail"]
    assert "private endpoints" in sku["detail"]
    assert "geo-replication" in sku["detail"]
    assert "az acr update --sku" in sku["fix"]


def _private(pair: ArmPair) -> None:
    pair.source.public_network_access = "Disabled"
    pair.source.private_endpoints = 1
    pair.source.bypass = "None"


def test_private_endpoint_source_under_auto_warns_that_copy_takes_over(
    readable: ArmPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _private(readable)
    code, checks = doctor(readable, monkeypatch, capsys, strategy="auto")
    network = checks[(readable.source.host, "network")]
    strategy = checks[(readable.target.host, "strategy")]
    assert code == 0
    assert network["status"] == "warn"
    assert "public network access Disabled" in network["detail"]
    assert "1 private endpoint" in network["detail"]
    assert "allow-trusted-services" in network["fix"]
    assert strategy["status"] == "warn"
    assert strategy["detail"].startswith("copy: import would fail")


def test_private_endpoint_source_under_import_fails(
    readable: ArmPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _private(readable)
    code, checks = doctor(readable, monkeypatch, capsys, strategy="import")
    strategy = checks[(readable.target.host, "strategy")]
    assert code == 1
    assert strategy["status"] == "fail"
    assert "auto or copy" in strategy["fix"]


def test_missing_import_role_fails_and_names_the_role(
    readable: ArmPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readable.arm.roles[(FUNCTION_MI.object_id, readable.target.resource_id.lower())] = {
        "AcrPush",
        "Reader",
    }
    code, checks = doctor(readable, monkeypatch, capsys)
    role = checks[(readable.target.host, "import-role")]
    assert code == 1
    assert role["status"] == "fail"
    assert "AcrPush is not enough" in role["detail"]
    assert "Container Registry Data Importer and Data Reader" in role["fix"]
    assert readable.target.resource_id in role["fix"]


def _cross_tenant(pair: ArmPair, entra: EntraDouble) -> dict[str, str]:
    pair.source.tenant = OTHER
    pair.arm.assign(FED_APP, "Reader", pair.source)
    pair.arm.assign(FED_APP, "AcrPull", pair.source)
    identities = {
        pair.source.host: {"mode": "federated", "tenant_id": OTHER, "client_id": FED_APP.client_id}
    }
    return {
        "REPLICATOR_IDENTITIES": json.dumps(identities),
        "AZURE_AUTHORITY_HOST": entra.authority,
    }


def test_cross_tenant_with_a_working_federated_credential(
    pair: ArmPair,
    entra: EntraDouble,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, checks = doctor(pair, monkeypatch, capsys, **_cross_tenant(pair, entra))
    federation = checks[(pair.source.host, "cross-tenant")]
    assert code == 0
    assert federation["status"] == "pass"
    assert "tenant-other" in federation["detail"]
    assert checks[(pair.source.host, "sku")]["status"] == "pass"  # ARM read in tenant B


def test_cross_tenant_without_the_federated_credential_fails_with_the_fix(
    pair: ArmPair,
    entra: EntraDouble,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = _cross_tenant(pair, entra)
    entra.add_app(App(FED_APP, trusts=None))
    code, checks = doctor(pair, monkeypatch, capsys, **extra)
    federation = checks[(pair.source.host, "cross-tenant")]
    assert code == 1
    assert federation["status"] == "fail"
    assert "AADSTS700213" in federation["detail"]
    assert "federated identity credential" in federation["fix"]
    assert "api://AzureADTokenExchange" in federation["fix"]


def test_cross_tenant_over_a_private_endpoint_cannot_import(
    pair: ArmPair,
    entra: EntraDouble,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = _cross_tenant(pair, entra)
    pair.source.private_endpoints = 1  # trusted services allowed, but not across tenants
    code, checks = doctor(pair, monkeypatch, capsys, strategy="auto", **extra)
    strategy = checks[(pair.target.host, "strategy")]
    assert code == 0
    assert strategy["status"] == "warn"
    assert "across tenants" in strategy["detail"]


def test_an_unreachable_registry_fails(
    readable: ArmPair,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from replicator.localstack import free_port

    readable.target.host = f"127.0.0.1:{free_port()}"  # nothing listens there
    code, checks = doctor(readable, monkeypatch, capsys)
    reach = checks[(readable.target.host, "reachable")]
    assert code == 1
    assert reach["status"] == "fail"
    assert "private endpoint" in reach["fix"]


def test_text_output_is_one_line_per_check_with_fixes(
    readable: ArmPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readable.target.sku = "Basic"
    for key, value in readable.env("auto").items():
        monkeypatch.setenv(key, value)
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sku = [line for line in lines if f"{readable.target.host}  sku:" in line]
    assert len(sku) == 1
    assert sku[0].startswith("WARN")
    assert "-> fix: upgrade" in sku[0]
    assert lines[-1].endswith("0 failed, 1 warnings")


def test_settings_that_cannot_be_read_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REPLICATOR_SOURCE", "src.azurecr.io")
    monkeypatch.setenv("REPLICATOR_TARGETS", "dr.azurecr.io")
    monkeypatch.setenv("REPLICATOR_IDENTITIES", json.dumps({"src.azurecr.io": "federated"}))
    assert main(["doctor"]) == 2
    assert "mode federated needs tenant_id and client_id" in capsys.readouterr().err


def test_a_resource_id_of_another_registry_fails(
    readable: ArmPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from doubles.arm import FakeAcr

    other = readable.arm.add(FakeAcr("contosoelsewhere", "elsewhere.azurecr.io"))
    readable.arm.assign(FUNCTION_MI, "Reader", other)
    code, checks = doctor(
        readable,
        monkeypatch,
        capsys,
        strategy="copy",
        REPLICATOR_SOURCE_RESOURCE_ID=other.resource_id,
    )
    mismatch = checks[(readable.source.host, "resource-id")]
    assert code == 1
    assert mismatch["status"] == "fail"
    assert "elsewhere.azurecr.io" in mismatch["detail"]
