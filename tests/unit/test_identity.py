from __future__ import annotations

import json

import pytest

from replicator.domain.config import load_settings
from replicator.domain.errors import ConfigError
from replicator.domain.identities import identity_of

BASE = {"REPLICATOR_SOURCE": "src.azurecr.io", "REPLICATOR_TARGETS": "dr.azurecr.io,127.0.0.1:5000"}
FED = {"mode": "federated", "tenant_id": "t-other", "client_id": "app-id"}
SECRET = {"mode": "secret", "tenant_id": "t-other", "client_id": "app-id", "secret_setting": "SP"}


MODES = [
    ("workstation-default", {}, "src.azurecr.io", "default"),
    (
        "in-azure-managed",
        {"IDENTITY_ENDPOINT": "http://localhost:8081/msi/token"},
        "src.azurecr.io",
        "managed",
    ),
    ("explicit-none", {"REPLICATOR_IDENTITY": "none"}, "dr.azurecr.io", "none"),
    ("not-acr-is-anonymous", {"IDENTITY_ENDPOINT": "x"}, "127.0.0.1:5000", "none"),
]


@pytest.mark.parametrize(
    ("env", "registry", "mode"), [m[1:] for m in MODES], ids=[m[0] for m in MODES]
)
def test_default_mode(env: dict[str, str], registry: str, mode: str) -> None:
    settings = load_settings({**BASE, **env})
    assert identity_of(settings, registry).mode == mode


def test_per_registry_entries_win() -> None:
    settings = load_settings(
        {
            **BASE,
            "REPLICATOR_IDENTITIES": json.dumps(
                {"SRC.azurecr.io": FED, "127.0.0.1:5000": "managed"}
            ),
            "AZURE_CLIENT_ID": "uami-client-id",
        }
    )
    source = identity_of(settings, "src.azurecr.io")
    assert (source.mode, source.tenant_id, source.client_id) == ("federated", "t-other", "app-id")
    assert source.cross_tenant
    assert identity_of(settings, "127.0.0.1:5000").mode == "managed"
    assert settings.identity.managed_client_id == "uami-client-id"


def test_secret_is_read_from_the_named_setting_and_never_printed() -> None:
    settings = load_settings(
        {**BASE, "REPLICATOR_IDENTITIES": json.dumps({"src.azurecr.io": SECRET}), "SP": "s3cr3t!"}
    )
    identity = identity_of(settings, "src.azurecr.io")
    assert identity.secret is not None
    assert identity.secret.reveal() == "s3cr3t!"
    assert "s3cr3t!" not in repr(settings)
    assert "s3cr3t!" not in str(settings)


PROBLEMS = [
    ("bad-default", {"REPLICATOR_IDENTITY": "magic"}, "REPLICATOR_IDENTITY must be"),
    ("not-json", {"REPLICATOR_IDENTITIES": "{"}, "not valid JSON"),
    ("not-object", {"REPLICATOR_IDENTITIES": "[]"}, "JSON object keyed by login server"),
    (
        "bad-mode",
        {"REPLICATOR_IDENTITIES": json.dumps({"src.azurecr.io": {"mode": "x"}})},
        "mode must be one of",
    ),
    (
        "federated-incomplete",
        {"REPLICATOR_IDENTITIES": json.dumps({"src.azurecr.io": {"mode": "federated"}})},
        "mode federated needs tenant_id and client_id",
    ),
    (
        "secret-incomplete",
        {"REPLICATOR_IDENTITIES": json.dumps({"src.azurecr.io": {**SECRET, "secret_setting": ""}})},
        "mode secret needs secret_setting",
    ),
    (
        "secret-unset",
        {"REPLICATOR_IDENTITIES": json.dumps({"src.azurecr.io": SECRET})},
        "the app setting SP (the client secret) is not set",
    ),
    (
        "kv-unresolved",
        {
            "REPLICATOR_IDENTITIES": json.dumps({"src.azurecr.io": SECRET}),
            "SP": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/sp/)",
        },
        "Key Vault reference in SP was not resolved",
    ),
    (
        "unknown-key",
        {"REPLICATOR_IDENTITIES": json.dumps({"src.azurecr.io": {**FED, "tenant": "x"}})},
        "unknown keys: tenant",
    ),
    (
        "bad-host",
        {"REPLICATOR_IDENTITIES": json.dumps({"bad host": "managed"})},
        "invalid registry host",
    ),
    ("http-authority", {"AZURE_AUTHORITY_HOST": "http://login.example"}, "must be an https://"),
]


@pytest.mark.parametrize(
    ("env", "problem"), [p[1:] for p in PROBLEMS], ids=[p[0] for p in PROBLEMS]
)
def test_incomplete_combinations_are_rejected_with_what_is_missing(
    env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **env})
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_every_problem_is_listed_at_once() -> None:
    env = {
        "REPLICATOR_IDENTITY": "magic",
        "REPLICATOR_IDENTITIES": json.dumps({"src.azurecr.io": {"mode": "federated"}}),
    }
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **env})
    assert len(caught.value.problems) == 2


class _Recording:
    """A TokenCredential that records the scopes it is asked for."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_: object) -> object:
        from azure.core.credentials import AccessToken

        self.scopes.extend(scopes)
        return AccessToken("entra", 2**31)


CLOUDS = [
    ("public", "src.azurecr.io", "", "https://containerregistry.azure.net/.default"),
    ("china", "src.azurecr.cn", "", "https://containerregistry.azure.cn/.default"),
    ("us-gov", "src.azurecr.us", "", "https://containerregistry.azure.us/.default"),
    (
        "override",
        "src.azurecr.cn",
        "https://management.chinacloudapi.cn",
        "https://management.chinacloudapi.cn/.default",
    ),
]


@pytest.mark.parametrize(
    ("source", "setting", "scope"), [c[1:] for c in CLOUDS], ids=[c[0] for c in CLOUDS]
)
def test_the_registry_token_audience_follows_the_cloud_or_the_setting(
    source: str, setting: str, scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Entra token exchanged at ``https://<login server>/oauth2/exchange`` is asked for
    the audience of the registry's cloud (issue 13 item 12), unless the setting names one."""
    import httpx

    from replicator.adapters.azure import credentials as identity
    from replicator.adapters.oci.auth import Authenticator
    from replicator.adapters.oci.transport import RetryPolicy

    recording = _Recording()
    monkeypatch.setattr(identity, "credential_from", lambda *_: recording)
    env = {"REPLICATOR_SOURCE": source, "REPLICATOR_TARGETS": "dr.azurecr.io"}
    settings = load_settings({**env, "REPLICATOR_ACR_AUDIENCE": setting})
    auth = identity.registry_credentials(settings)(source)
    assert auth is not None and auth.kind == "azure"
    seen: list[str] = []

    def token_service(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/oauth2/exchange":
            return httpx.Response(200, json={"refresh_token": "r"})
        return httpx.Response(200, json={"access_token": "a", "expires_in": 300})

    with httpx.Client(transport=httpx.MockTransport(token_service)) as http:
        authenticator = Authenticator(source, auth, http, RetryPolicy(attempts=1))
        challenge = f'Bearer realm="https://{source}/oauth2/token",service="{source}"'
        request = httpx.Request("GET", f"https://{source}/v2/a/tags/list")
        assert authenticator.challenged(
            httpx.Response(401, headers={"WWW-Authenticate": challenge}, request=request),
            ("repository:a:pull",),
            0,
        )
    assert recording.scopes == [scope]
    assert seen[0] == f"https://{source}/oauth2/exchange"
