"""The credential factory against the managed identity and Entra doubles, SDKs unmodified;
and the ARM double refusing what ARM refuses, decided from the role table."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
import trustme
from azure.core.exceptions import ClientAuthenticationError

from replicator.adapters.acr import roles
from replicator.adapters.azure.credentials import credential_for
from replicator.domain.config import Settings, load_settings
from tests.doubles import Principal, TokenBook
from tests.doubles.arm import ArmDouble, ArmPair, FakeAcr
from tests.doubles.identity import (
    EXCHANGE_AUDIENCE,
    FED_APP,
    FUNCTION_MI,
    OTHER,
    USER_MI,
    App,
    EntraDouble,
    ManagedIdentityDouble,
)

SOURCE = "src.azurecr.io"
TARGET = "dr.azurecr.io"
ARM = "https://management.azure.com/.default"


def settings_for(extra: dict[str, str], identities: dict[str, object] | None = None) -> Settings:
    env = {"REPLICATOR_SOURCE": SOURCE, "REPLICATOR_TARGETS": TARGET, **extra}
    if identities is not None:
        env["REPLICATOR_IDENTITIES"] = json.dumps(identities)
    return load_settings(env)


def test_system_assigned_identity_through_the_app_service_protocol(
    managed_identity: ManagedIdentityDouble, book: TokenBook
) -> None:
    settings = settings_for(managed_identity.env)  # auto: IDENTITY_ENDPOINT is set -> managed
    credential = credential_for(settings, TARGET)
    assert credential is not None
    token = credential.get_token(ARM).token
    assert book.lookup(token) == (FUNCTION_MI, "https://management.azure.com")
    assert managed_identity.requests[-1] == {
        "api-version": "2019-08-01",
        "resource": "https://management.azure.com",
    }


def test_user_assigned_identity_by_azure_client_id(
    managed_identity: ManagedIdentityDouble, book: TokenBook
) -> None:
    settings = settings_for({**managed_identity.env, "AZURE_CLIENT_ID": USER_MI.client_id})
    credential = credential_for(settings, SOURCE)
    assert credential is not None
    assert book.lookup(credential.get_token(ARM).token) == (USER_MI, "https://management.azure.com")
    assert managed_identity.requests[-1]["client_id"] == USER_MI.client_id


def test_cross_tenant_federation_feeds_the_managed_identity_token_to_entra(
    managed_identity: ManagedIdentityDouble, entra: EntraDouble, book: TokenBook
) -> None:
    settings = settings_for(
        {**managed_identity.env, "AZURE_AUTHORITY_HOST": entra.authority},
        {SOURCE: {"mode": "federated", "tenant_id": OTHER, "client_id": FED_APP.client_id}},
    )
    credential = credential_for(settings, SOURCE)
    assert credential is not None
    token = credential.get_token("https://containerregistry.azure.net/.default").token
    assert book.lookup(token) == (FED_APP, "https://containerregistry.azure.net")
    assert managed_identity.requests[-1]["resource"] == EXCHANGE_AUDIENCE
    sent = entra.requests[-1]
    assert sent["client_id"] == FED_APP.client_id
    assert sent["grant_type"] == "client_credentials"
    assert sent["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert book.lookup(sent["client_assertion"]) == (FUNCTION_MI, EXCHANGE_AUDIENCE)


def test_federation_without_a_federated_credential_is_refused(
    managed_identity: ManagedIdentityDouble, entra: EntraDouble
) -> None:
    entra.add_app(App(FED_APP, trusts=None))  # the app exists, the FIC does not
    settings = settings_for(
        {**managed_identity.env, "AZURE_AUTHORITY_HOST": entra.authority},
        {SOURCE: {"mode": "federated", "tenant_id": OTHER, "client_id": FED_APP.client_id}},
    )
    credential = credential_for(settings, SOURCE)
    assert credential is not None
    with pytest.raises(ClientAuthenticationError, match="AADSTS700213"):
        credential.get_token("https://containerregistry.azure.net/.default")


def test_service_principal_secret_from_an_app_setting(entra: EntraDouble, book: TokenBook) -> None:
    entra.add_app(App(FED_APP, secret="resolved-from-key-vault"))
    settings = settings_for(
        {"AZURE_AUTHORITY_HOST": entra.authority, "SRC_SP_SECRET": "resolved-from-key-vault"},
        {
            SOURCE: {
                "mode": "secret",
                "tenant_id": OTHER,
                "client_id": FED_APP.client_id,
                "secret_setting": "SRC_SP_SECRET",
            }
        },
    )
    assert "resolved-from-key-vault" not in repr(settings)
    credential = credential_for(settings, SOURCE)
    assert credential is not None
    assert book.lookup(credential.get_token(ARM).token) == (FED_APP, "https://management.azure.com")
    assert "client_secret" not in entra.requests[-1]  # the double never keeps it either


# -- the ARM double decides from the role table --------------------------------------------


def arm_call(
    arm: ArmDouble, ca: trustme.CA, principal: Principal, method: str, path: str, body: object
) -> httpx.Response:
    token = arm.book.issue(principal, arm.url)
    with ca.cert_pem.tempfile() as bundle:
        return httpx.request(
            method,
            f"{arm.url}{path}?api-version=2025-11-01",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=bundle),
        )


def import_into(arm: ArmDouble, ca: trustme.CA, target: FakeAcr, source: FakeAcr) -> httpx.Response:
    body = {
        "source": {"resourceId": source.resource_id, "sourceImage": "team/app:1.0"},
        "targetTags": ["team/app:1.0"],
        "mode": "Force",
    }
    return arm_call(arm, ca, FUNCTION_MI, "POST", f"{target.resource_id}/importImage", body)


@pytest.fixture
def acrs(arm: ArmDouble) -> tuple[FakeAcr, FakeAcr]:
    # no registry behind them: every call here is refused before anything is copied
    return arm.add(FakeAcr("contososrc", "127.0.0.1:9")), arm.add(
        FakeAcr("contosodr", "127.0.0.1:9")
    )


def test_import_with_acr_pull_on_the_source_is_linked_authorization_failed(
    arm: ArmDouble, ca: trustme.CA, acrs: tuple[FakeAcr, FakeAcr]
) -> None:
    """Azure/acr#237: importImage/action on the target, AcrPull alone on the source."""
    source, target = acrs
    arm.assign(FUNCTION_MI, "Container Registry Data Importer and Data Reader", target)
    arm.assign(FUNCTION_MI, "AcrPull", source)
    answer = import_into(arm, ca, target, source)
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["code"] == "LinkedAuthorizationFailed"
    assert f"'{roles.IMPORT_ACTION}' on scope '{target.resource_id}'" in error["message"]
    assert (
        f"does not have permission to perform action 'read' on the linked scope(s) "
        f"'{source.resource_id}'" in error["message"]
    )
    assert arm.operations == {}  # refused up front, no operation started


def test_import_with_acr_push_alone_on_the_target_is_authorization_failed(
    arm: ArmDouble, ca: trustme.CA, acrs: tuple[FakeAcr, FakeAcr]
) -> None:
    source, target = acrs
    arm.grant(FUNCTION_MI, roles.source_grants(["auto"], abac=False), source)
    arm.assign(FUNCTION_MI, "AcrPush", target)
    answer = import_into(arm, ca, target, source)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "AuthorizationFailed"
    assert roles.IMPORT_ACTION in answer.json()["error"]["message"]


def test_import_with_what_infra_grants_is_accepted(
    arm: ArmDouble, ca: trustme.CA, pair: ArmPair
) -> None:
    arm.roles.clear()
    arm.grant(FUNCTION_MI, roles.source_grants(["import"], abac=False), pair.source)
    arm.grant(
        FUNCTION_MI,
        roles.target_grants(strategy="import", delete_policy="keep", abac=False),
        pair.target,
    )
    assert import_into(arm, ca, pair.target, pair.source).status_code == 202
    assert [op.status for op in arm.operations.values()] == ["Succeeded"]
    assert pair.target_digest("1.0") is not None


@pytest.mark.parametrize(
    ("role", "readable"),
    [("AcrPull", False), ("AcrPush", False), ("Reader", True), ("importer", True)],
    ids=["AcrPull", "AcrPush", "Reader", "importer"],
)
def test_reading_a_registry_needs_registries_read(
    arm: ArmDouble, ca: trustme.CA, acrs: tuple[FakeAcr, FakeAcr], role: str, readable: bool
) -> None:
    _, target = acrs
    arm.assign(FUNCTION_MI, role, target)
    answer = arm_call(arm, ca, FUNCTION_MI, "GET", target.resource_id, None)
    assert answer.status_code == (200 if readable else 403)


def test_the_permissions_answer_is_the_published_role_definitions(
    arm: ArmDouble, ca: trustme.CA, acrs: tuple[FakeAcr, FakeAcr]
) -> None:
    _, target = acrs
    arm.assign(FUNCTION_MI, "AcrPull", target)
    path = f"{target.resource_id}/providers/Microsoft.Authorization/permissions"
    answer = arm_call(arm, ca, FUNCTION_MI, "GET", path, None)
    assert answer.json() == {
        "value": [
            {
                "actions": ["Microsoft.ContainerRegistry/registries/pull/read"],
                "notActions": [],
                "dataActions": [],
                "notDataActions": [],
            }
        ]
    }
