"""The credential factory against the managed identity and Entra doubles, SDKs unmodified."""

from __future__ import annotations

import json

import pytest
from azure.core.exceptions import ClientAuthenticationError
from doubles import TokenBook
from doubles.identity import (
    EXCHANGE_AUDIENCE,
    FED_APP,
    FUNCTION_MI,
    OTHER,
    USER_MI,
    App,
    EntraDouble,
    ManagedIdentityDouble,
)

from replicator.config import Settings, load_settings
from replicator.identity import credential_for

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
