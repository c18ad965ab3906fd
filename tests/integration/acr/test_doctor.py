"""``acr-replicator doctor`` against the ARM, managed identity and Entra doubles and real
local registries, with the registries in each shape the seed's caveats describe. The
identity holds what infra/ grants (the role table's matrix, ``pair``) unless a test
takes some of it away; the ARM double decides from the same table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.localstack import LocalStack
from replicator.adapters.acr import roles
from replicator.adapters.acr.roles import ABAC_MODE
from replicator.cli import main
from tests.doubles import TokenBook
from tests.doubles.arm import ArmPair
from tests.doubles.identity import (
    FED_APP,
    FUNCTION_MI,
    OTHER,
    App,
    EntraDouble,
    ManagedIdentityDouble,
)
from tests.doubles.token_server import ACR_AUDIENCE, AcrExchange, TokenService, serve

Checks = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class Doctor:
    """Runs ``acr-replicator doctor`` with a pair's settings in the environment."""

    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def configure(self, pair: ArmPair, strategy: str = "import", **extra: str) -> None:
        for key, value in pair.env(strategy, **extra).items():
            self.monkeypatch.setenv(key, value)

    def __call__(self, pair: ArmPair, strategy: str = "import", **extra: str) -> tuple[int, Checks]:
        """``--json``: the exit code and the checks by (registry, check)."""
        self.configure(pair, strategy, **extra)
        code = main(["doctor", "--json"])
        report = json.loads(self.capsys.readouterr().out)
        assert report["ok"] is (code == 0)
        return code, {(c["registry"], c["check"]): c for c in report["checks"]}


@pytest.fixture
def doctor(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Doctor:
    return Doctor(monkeypatch, capsys)


def statuses(checks: Checks, host: str) -> dict[str, str]:
    return {name: c["status"] for (registry, name), c in checks.items() if registry == host}


def subscription_scope(pair: ArmPair) -> str:
    return f"/subscriptions/{pair.source.subscription}"


@pytest.fixture
def readable(pair: ArmPair) -> ArmPair:
    """What infra/ grants, and the source's Event Grid system topic exists (in another
    group); the identity may list the subscription's topics (Reader there)."""
    pair.arm.assignments.assign(FUNCTION_MI, "Reader", subscription_scope(pair))
    pair.arm.add_topic("contoso-events", pair.source, resource_group="rg-events")
    return pair


def hold(pair: ArmPair, registry: str, *keys: str) -> None:
    """The function's identity holds exactly these roles on the source or the target."""
    acr = pair.source if registry == "source" else pair.target
    pair.arm.roles[(FUNCTION_MI.object_id, acr.resource_id.lower())] = set(keys)


def test_a_healthy_premium_pair_passes_everything(readable: ArmPair, doctor: Doctor) -> None:
    code, checks = doctor(readable)
    assert code == 0
    assert statuses(checks, readable.source.host) == {
        "identity": "pass",
        "reachable": "pass",
        "pull": "pass",
        "resource-id": "pass",
        "sku": "pass",
        "network": "pass",
        "export-policy": "pass",
        "roles": "pass",
        "import-source": "pass",
        "event-grid": "pass",
        "audience": "pass",
        "budget": "pass",  # the request budget plan (issue 17)
    }
    assert statuses(checks, readable.target.host) == {
        "identity": "pass",
        "reachable": "pass",
        "push": "pass",
        "resource-id": "pass",
        "sku": "pass",
        "network": "pass",
        "roles": "pass",
        "import-role": "pass",
        "strategy": "pass",
        "audience": "pass",
        "budget": "pass",
    }
    assert checks[(readable.target.host, "strategy")]["detail"].startswith("import:")
    source_roles = checks[(readable.source.host, "roles")]["detail"]
    assert "role-assignment mode rbac (LegacyRegistryPermissions)" in source_roles
    assert "Container Registry Data Importer and Data Reader" in source_roles
    grid = checks[(readable.source.host, "event-grid")]["detail"]
    assert "contoso-events in rg-events" in grid


def test_basic_sku_warns_with_what_it_rules_out(readable: ArmPair, doctor: Doctor) -> None:
    readable.target.sku = "Basic"
    code, checks = doctor(readable, strategy="auto")
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
    readable: ArmPair, doctor: Doctor
) -> None:
    _private(readable)
    code, checks = doctor(readable, strategy="auto")
    network = checks[(readable.source.host, "network")]
    strategy = checks[(readable.target.host, "strategy")]
    assert code == 0
    assert network["status"] == "warn"
    assert "public network access Disabled" in network["detail"]
    assert "1 private endpoint" in network["detail"]
    assert "allow-trusted-services" in network["fix"]
    assert strategy["status"] == "warn"
    assert strategy["detail"].startswith("copy: auto: copied over the data plane, import refused")


def test_private_endpoint_source_under_import_fails(readable: ArmPair, doctor: Doctor) -> None:
    _private(readable)
    code, checks = doctor(readable, strategy="import")
    strategy = checks[(readable.target.host, "strategy")]
    assert code == 1
    assert strategy["status"] == "fail"
    assert "auto or copy" in strategy["fix"]


def test_missing_import_role_fails_and_names_the_role(readable: ArmPair, doctor: Doctor) -> None:
    hold(readable, "target", "acrPush", "reader")
    code, checks = doctor(readable)
    role = checks[(readable.target.host, "import-role")]
    assert code == 1
    assert role["status"] == "fail"
    assert "AcrPush is not enough" in role["detail"]
    assert "Container Registry Data Importer and Data Reader" in role["fix"]
    assert readable.target.resource_id in role["fix"]


def _cross_tenant(pair: ArmPair, entra: EntraDouble) -> dict[str, str]:
    """The source's owner granted the federated app AcrPull (what docs/deploy.md asks), and
    Reader so that doctor can read the source's settings."""
    pair.source.tenant = OTHER
    pair.arm.roles.pop((FUNCTION_MI.object_id, pair.source.resource_id.lower()))
    pair.arm.grant(FED_APP, roles.source_owner_grants(abac=False), pair.source)
    pair.arm.assign(FED_APP, "Reader", pair.source)
    identities = {
        pair.source.host: {"mode": "federated", "tenant_id": OTHER, "client_id": FED_APP.client_id}
    }
    return {
        "REPLICATOR_IDENTITIES": json.dumps(identities),
        "AZURE_AUTHORITY_HOST": entra.authority,
    }


def test_cross_tenant_with_a_working_federated_credential(
    pair: ArmPair, entra: EntraDouble, doctor: Doctor
) -> None:
    code, checks = doctor(pair, **_cross_tenant(pair, entra))
    federation = checks[(pair.source.host, "cross-tenant")]
    assert code == 0
    assert federation["status"] == "pass"
    assert "tenant-other" in federation["detail"]
    assert checks[(pair.source.host, "sku")]["status"] == "pass"  # ARM read in tenant B


def test_cross_tenant_without_the_federated_credential_fails_with_the_fix(
    pair: ArmPair, entra: EntraDouble, doctor: Doctor
) -> None:
    extra = _cross_tenant(pair, entra)
    entra.add_app(App(FED_APP, trusts=None))
    code, checks = doctor(pair, **extra)
    federation = checks[(pair.source.host, "cross-tenant")]
    assert code == 1
    assert federation["status"] == "fail"
    assert "AADSTS700213" in federation["detail"]
    assert "federated identity credential" in federation["fix"]
    assert "api://AzureADTokenExchange" in federation["fix"]


def test_cross_tenant_over_a_private_endpoint_cannot_import(
    pair: ArmPair, entra: EntraDouble, doctor: Doctor
) -> None:
    extra = _cross_tenant(pair, entra)
    pair.source.private_endpoints = 1  # trusted services allowed, but not across tenants
    code, checks = doctor(pair, strategy="auto", **extra)
    strategy = checks[(pair.target.host, "strategy")]
    assert code == 0
    assert strategy["status"] == "warn"
    assert "across tenants" in strategy["detail"]


def test_an_unreachable_registry_fails(readable: ArmPair, doctor: Doctor) -> None:
    from devstack.localstack import free_port

    readable.target.host = f"127.0.0.1:{free_port()}"  # nothing listens there
    code, checks = doctor(readable)
    reach = checks[(readable.target.host, "reachable")]
    assert code == 1
    assert reach["status"] == "fail"
    assert "private endpoint" in reach["fix"]


def test_text_output_is_one_line_per_check_with_fixes(
    readable: ArmPair, doctor: Doctor, capsys: pytest.CaptureFixture[str]
) -> None:
    readable.target.sku = "Basic"
    doctor.configure(readable, "auto")
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


def test_a_resource_id_of_another_registry_fails(readable: ArmPair, doctor: Doctor) -> None:
    from tests.doubles.arm import FakeAcr

    other = readable.arm.add(FakeAcr("contosoelsewhere", "elsewhere.azurecr.io"))
    readable.arm.grant(FUNCTION_MI, roles.source_grants(["copy"], abac=False), other)
    readable.arm.assign(FUNCTION_MI, "Reader", other)
    code, checks = doctor(
        readable, strategy="copy", REPLICATOR_SOURCE_RESOURCE_ID=other.resource_id
    )
    mismatch = checks[(readable.source.host, "resource-id")]
    assert code == 1
    assert mismatch["status"] == "fail"
    assert "elsewhere.azurecr.io" in mismatch["detail"]


# -- the source side of import, role-assignment modes, the Event Grid topic ----------------


def test_acr_pull_alone_on_the_source_fails_import_and_names_the_importer_role(
    readable: ArmPair, doctor: Doctor
) -> None:
    """Issue 13 item 1: ARM's linked-scope check needs read on the source."""
    hold(readable, "source", "acrPull")
    code, checks = doctor(readable, strategy="import")
    side = checks[(readable.source.host, "import-source")]
    assert code == 1
    assert side["status"] == "fail"
    assert "no read on the source" in side["detail"]
    assert "LinkedAuthorizationFailed" in side["detail"]
    assert "Container Registry Data Importer and Data Reader" in side["fix"]
    source_roles = checks[(readable.source.host, "roles")]
    assert source_roles["status"] == "fail"
    assert "missing read (import)" in source_roles["detail"]
    assert readable.source.resource_id in source_roles["fix"]
    strategy = checks[(readable.target.host, "strategy")]
    assert strategy["status"] == "fail"
    assert "cannot read the source registry" in strategy["detail"]


def test_acr_pull_alone_on_the_source_under_auto_says_images_are_copied_and_why(
    readable: ArmPair, doctor: Doctor
) -> None:
    hold(readable, "source", "acrPull")
    code, checks = doctor(readable, strategy="auto")
    assert code == 0
    assert checks[(readable.source.host, "import-source")]["status"] == "warn"
    strategy = checks[(readable.target.host, "strategy")]
    assert strategy["status"] == "warn"
    assert strategy["detail"].startswith("copy: auto: copied over the data plane, import refused")
    assert "cannot read the source registry" in strategy["detail"]


def test_a_copy_only_configuration_does_not_ask_for_read_on_the_source(
    readable: ArmPair, doctor: Doctor
) -> None:
    hold(readable, "source", *(r.key for r in roles.source_grants(["copy"], abac=False)))
    hold(readable, "target", "acrPush")
    code, checks = doctor(readable, strategy="copy")
    assert code == 0
    assert (readable.source.host, "import-source") not in checks
    assert checks[(readable.source.host, "roles")]["status"] == "pass"
    assert checks[(readable.target.host, "strategy")]["detail"] == (
        "copy: strategy copy is configured"
    )
    # AcrPull and AcrPush cannot read a registry: doctor says so and goes on
    assert checks[(readable.source.host, "arm")]["status"] == "warn"


def test_an_abac_target_holding_rbac_roles_is_flagged(readable: ArmPair, doctor: Doctor) -> None:
    """Issue 13 item 3: on an ABAC registry AcrPush grants nothing; doctor reads the mode
    from ARM and says which roles that mode needs."""
    readable.target.role_assignment_mode = ABAC_MODE
    code, checks = doctor(readable, strategy="copy")
    target_roles = checks[(readable.target.host, "roles")]
    assert code == 1
    assert target_roles["status"] == "fail"
    assert "role-assignment mode abac (AbacRepositoryPermissions)" in target_roles["detail"]
    assert "Container Registry Repository Writer" in target_roles["detail"]
    assert "missing push (copy)" in target_roles["detail"]
    assert "AcrPush grant nothing on this registry" in target_roles["detail"]
    assert "targetRoleAssignmentMode=abac" in target_roles["detail"]
    assert "--role 'Container Registry Repository Writer'" in target_roles["fix"]


def test_an_abac_pair_with_the_abac_roles_passes(readable: ArmPair, doctor: Doctor) -> None:
    readable.source.role_assignment_mode = ABAC_MODE
    readable.target.role_assignment_mode = ABAC_MODE
    hold(readable, "source", *(r.key for r in roles.source_grants(["auto"], abac=True)))
    granted = roles.target_grants(strategy="auto", delete_policy="propagate", abac=True)
    hold(readable, "target", *(r.key for r in granted))
    code, checks = doctor(readable, strategy="auto", REPLICATOR_DELETE_POLICY="propagate")
    assert code == 0
    for host in (readable.source.host, readable.target.host):
        assert checks[(host, "roles")]["status"] == "pass", checks[(host, "roles")]
        assert "abac (AbacRepositoryPermissions)" in checks[(host, "roles")]["detail"]


def test_a_propagating_delete_policy_needs_delete_on_the_target(
    readable: ArmPair, doctor: Doctor
) -> None:
    code, checks = doctor(readable, strategy="auto", REPLICATOR_DELETE_POLICY="propagate")
    target_roles = checks[(readable.target.host, "roles")]
    assert code == 1
    assert "missing delete (delete)" in target_roles["detail"]
    assert "--role 'AcrDelete'" in target_roles["fix"]


def test_no_system_topic_on_the_source_warns(pair: ArmPair, doctor: Doctor) -> None:
    pair.arm.assignments.assign(FUNCTION_MI, "Reader", subscription_scope(pair))
    code, checks = doctor(pair)
    grid = checks[(pair.source.host, "event-grid")]
    assert code == 0
    assert grid["status"] == "warn"
    assert "azd hooks run postdeploy" in grid["fix"]


def test_topics_that_cannot_be_listed_degrade_to_a_warning(pair: ArmPair, doctor: Doctor) -> None:
    pair.arm.add_topic("contoso-events", pair.source)
    code, checks = doctor(pair)  # no Reader on the subscription
    grid = checks[(pair.source.host, "event-grid")]
    assert code == 0
    assert grid["status"] == "warn"
    assert "could not list" in grid["detail"]
    assert "AuthorizationFailed" in grid["detail"]


def test_verdicts_do_not_import_doctor() -> None:
    """The doctor <-> verdicts cycle is gone: verdicts is pure, doctor uses it."""
    import ast

    import replicator.app.doctor.audience_checks
    import replicator.app.doctor.role_checks
    import replicator.app.doctor.verdicts

    modules = (
        replicator.app.doctor.verdicts,
        replicator.app.doctor.role_checks,
        replicator.app.doctor.audience_checks,
    )
    for module in modules:
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "replicator.app.doctor.run" not in imported, module.__name__


# -- the registry token's audience and azureADAuthenticationAsArmPolicy (issue 13 item 12) --

ARM_AUDIENCE = "https://management.azure.com"


@pytest.fixture
def guarded_target(
    readable: ArmPair, stack: LocalStack, tmp_path: Path, book: TokenBook
) -> Iterator[ArmPair]:
    """The target's data plane behind ACR's token endpoints: the exchange takes the Entra
    tokens for the ACR audience, and for an ARM audience while the target's
    ``azureADAuthenticationAsArmPolicy`` (as the ARM double serves it) is enabled."""
    target = readable.target
    exchange = AcrExchange(
        book,
        readable.arm.assignments,
        target.resource_id,
        arm_policy=lambda: target.arm_audience_policy,
    )
    service = TokenService(tmp_path, acr=exchange)
    with serve(service):
        running = stack.start_registry(config=service.registry_config())
        target.host = running.host
        yield readable
        running.stop()


def asked_audiences(managed_identity: ManagedIdentityDouble) -> set[str]:
    return {q["resource"].rstrip("/") for q in managed_identity.requests if "resource" in q}


def test_an_arm_audience_on_a_registry_that_refuses_arm_tokens_fails_naming_what_works(
    guarded_target: ArmPair, managed_identity: ManagedIdentityDouble, doctor: Doctor
) -> None:
    """REPLICATOR_ACR_AUDIENCE set to ARM's, the target's azureADAuthenticationAsArmPolicy
    disabled: the exchange refuses the worker's token; doctor says which audience works and
    how to fix it, and its own checks asked Entra for the worker's audience, not ACR's."""
    pair = guarded_target
    pair.target.arm_audience_policy = "disabled"
    code, checks = doctor(pair, strategy="auto", REPLICATOR_ACR_AUDIENCE=ARM_AUDIENCE)
    audience = checks[(pair.target.host, "audience")]
    assert code == 1
    assert audience["status"] == "fail"
    assert f"{ARM_AUDIENCE} (REPLICATOR_ACR_AUDIENCE), an ARM audience" in audience["detail"]
    assert "azureADAuthenticationAsArmPolicy is disabled" in audience["detail"]
    assert f"{ACR_AUDIENCE} works" in audience["detail"]
    assert f"set REPLICATOR_ACR_AUDIENCE to {ACR_AUDIENCE}, or remove it" in audience["fix"]
    assert (
        f"az acr config authentication-as-arm update -r {pair.target.name} --status enabled"
        in audience["fix"]
    )
    token = checks[(pair.target.host, "token")]
    assert token["status"] == "fail"
    assert token["fix"] == audience["fix"]  # not "enable the managed identity"
    assert ACR_AUDIENCE not in asked_audiences(managed_identity)
    assert ARM_AUDIENCE in asked_audiences(managed_identity)


def test_an_arm_audience_passes_while_the_policy_is_enabled(
    guarded_target: ArmPair, managed_identity: ManagedIdentityDouble, doctor: Doctor
) -> None:
    pair = guarded_target
    code, checks = doctor(pair, strategy="auto", REPLICATOR_ACR_AUDIENCE=ARM_AUDIENCE)
    assert code == 0
    assert checks[(pair.target.host, "token")]["status"] == "pass"
    assert checks[(pair.target.host, "push")]["status"] == "pass"
    audience = checks[(pair.target.host, "audience")]
    assert audience["status"] == "pass"
    assert (
        "an ARM audience: taken while azureADAuthenticationAsArmPolicy is enabled"
        in (audience["detail"])
    )


def test_the_derived_acr_audience_works_whatever_the_policy(
    guarded_target: ArmPair, managed_identity: ManagedIdentityDouble, doctor: Doctor
) -> None:
    pair = guarded_target
    pair.target.arm_audience_policy = "disabled"
    code, checks = doctor(pair, strategy="auto")
    assert code == 0
    assert checks[(pair.target.host, "token")]["status"] == "pass"
    audience = checks[(pair.target.host, "audience")]
    assert audience["status"] == "pass"
    assert audience["detail"] == (
        f"tokens are asked for {ACR_AUDIENCE} (from the login server's cloud); ARM-audience "
        "tokens are refused here (azureADAuthenticationAsArmPolicy disabled)"
    )
    assert ARM_AUDIENCE not in asked_audiences(managed_identity)


def test_the_token_double_refuses_an_arm_token_only_while_the_policy_is_disabled(
    guarded_target: ArmPair, book: TokenBook
) -> None:
    """The double itself: the exchange's audience check follows the ARM double's property."""
    import httpx

    pair = guarded_target
    served = json.loads(json.dumps(pair.target.to_json()))
    assert served["properties"]["policies"]["azureADAuthenticationAsArmPolicy"] == {
        "status": "enabled"
    }
    challenge = httpx.get(f"http://{pair.target.host}/v2/").headers["WWW-Authenticate"]
    realm = challenge.split('realm="')[1].split('"')[0]
    service = challenge.split('service="')[1].split('"')[0]
    exchange = realm.replace("/oauth2/token", "/oauth2/exchange")

    def status(audience: str) -> int:
        form = {
            "grant_type": "access_token",
            "service": service,
            "access_token": book.issue(FUNCTION_MI, audience),
        }
        return httpx.post(exchange, data=form).status_code

    assert status(ARM_AUDIENCE) == 200
    assert status(ACR_AUDIENCE) == 200
    pair.target.arm_audience_policy = "disabled"
    assert status(ARM_AUDIENCE) == 401
    assert status(ACR_AUDIENCE) == 200
