"""Authentication against real registries: htpasswd basic, token auth, ACR's exchange flow."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from devstack.localstack import LocalStack, Registry
from devstack.testimages import push_test_image
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.credentials import RegistryAuth
from replicator.adapters.oci.dockerconfig import docker_config_auth
from replicator.adapters.oci.registries import Registries
from replicator.domain.errors import PermanentRegistryError
from replicator.domain.reference import ImageRef
from tests.doubles.htpasswd import start_basic_registry
from tests.doubles.token_server import TokenService, serve

USER, PASSWORD = "replicator", "s3cret-pass"


@pytest.fixture
def basic_registry(stack: LocalStack, tmp_path: Path) -> Iterator[Registry]:
    running = start_basic_registry(stack, tmp_path, USER, PASSWORD, realm="test")
    yield running
    running.stop()


@pytest.fixture(params=["ES256", "RS256"])
def token_registry(
    stack: LocalStack, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Registry, TokenService]]:
    with serve(TokenService(tmp_path, algorithm=request.param)) as service:
        running = stack.start_registry(config=service.registry_config())
        yield running, service
        running.stop()


class EntraCredential:
    """A TokenCredential that hands out one fixed Entra access token and counts calls."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append((scopes, kwargs))
        return AccessToken(self.token, int(time.time()) + 3600)


def _copy_in(registries: Registries, source: Registry, target: Registry, repo: str) -> str:
    src = ImageRef(source.host, repo, "v1")
    pushed = push_test_image(registries, src)
    report = ImageCopier(registries).copy_image(src, ImageRef(target.host, repo, "v1"))
    assert report.digest == pushed.digest
    assert report.referrers_copied == 2
    return pushed.digest


def test_basic_auth_registry(registry: Registry, basic_registry: Registry) -> None:
    def creds(host: str) -> RegistryAuth | None:
        return RegistryAuth.basic(USER, PASSWORD) if host == basic_registry.host else None

    with Registries(credentials=creds) as registries:
        digest = _copy_in(registries, registry, basic_registry, "team/app")
        found = registries.client(basic_registry.host).head_manifest(
            ImageRef(basic_registry.host, "team/app", "v1")
        )
        assert found is not None
        assert found.digest == digest
    with Registries() as anonymous, pytest.raises(PermanentRegistryError) as failed:
        anonymous.client(basic_registry.host).head_manifest(
            ImageRef(basic_registry.host, "team/app", "v1")
        )
    assert failed.value.status == 401


def test_wrong_password_is_a_clear_permanent_error(basic_registry: Registry) -> None:
    wrong = Registries(credentials=lambda h: RegistryAuth.basic(USER, "wrong"))
    with wrong, pytest.raises(PermanentRegistryError) as failed:
        wrong.client(basic_registry.host).head_manifest(
            ImageRef(basic_registry.host, "team/app", "v1")
        )
    assert failed.value.status == 401
    assert "wrong" not in str(failed.value)


def test_docker_config_credentials(basic_registry: Registry, tmp_path: Path) -> None:
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {basic_registry.host: {"auth": encoded}}}))
    auth = docker_config_auth(basic_registry.host, config)
    assert auth == RegistryAuth.basic(USER, PASSWORD)
    assert docker_config_auth("elsewhere.example", config) is None
    with Registries(credentials=lambda h: docker_config_auth(h, config)) as registries:
        pushed = push_test_image(registries, ImageRef(basic_registry.host, "team/app", "v1"))
        assert registries.client(basic_registry.host).head_manifest(
            ImageRef(basic_registry.host, "team/app", digest=pushed.digest)
        )


def test_bearer_token_flow_against_a_token_auth_registry(
    registry: Registry,
    token_registry: tuple[Registry, TokenService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    target, service = token_registry
    caplog.set_level(logging.DEBUG)
    with Registries() as registries:
        _copy_in(registries, registry, target, "team/app")
        fetched = len(service.issued)
        # a second image into the same repository reuses the cached tokens
        _copy_in(registries, registry, target, "team/app")
        assert len(service.issued) == fetched
    assert service.issued
    assert not any(token in caplog.text for token in service.issued)


def test_a_refused_token_is_renewed_on_401(
    registry: Registry, token_registry: tuple[Registry, TokenService]
) -> None:
    target, service = token_registry
    with Registries() as registries:
        _copy_in(registries, registry, target, "team/one")
    baseline = len(service.issued)
    service.expired_next = 1  # the next token is stale on arrival but says it lasts
    with Registries() as registries:
        _copy_in(registries, registry, target, "team/two")
    assert len(service.issued) == 2 * baseline + 1  # one renewal, then cached as before


def test_token_service_with_basic_credentials(
    registry: Registry, token_registry: tuple[Registry, TokenService]
) -> None:
    target, service = token_registry
    service.users = {USER: PASSWORD}
    with Registries(credentials=lambda h: RegistryAuth.basic(USER, "nope")) as wrong:
        with pytest.raises(PermanentRegistryError) as failed:
            wrong.client(target.host).head_manifest(ImageRef(target.host, "team/app", "v1"))
        assert failed.value.status == 401
    creds = {target.host: RegistryAuth.basic(USER, PASSWORD)}
    with Registries(credentials=creds.get) as registries:
        _copy_in(registries, registry, target, "team/app")


def test_acr_entra_exchange_flow(
    registry: Registry, token_registry: tuple[Registry, TokenService]
) -> None:
    target, service = token_registry
    service.entra_tokens = {"entra-access-token"}
    credential = EntraCredential("entra-access-token")
    auth = RegistryAuth.azure(credential, tenant="tenant-a")
    with Registries(credentials=lambda h: auth if h == target.host else None) as registries:
        _copy_in(registries, registry, target, "team/app")
    assert service.requests.count("POST /oauth2/exchange") == 1
    assert service.requests.count("POST /oauth2/token") >= 1
    assert "GET /oauth2/token" not in service.requests
    assert credential.calls[0] == (
        ("https://containerregistry.azure.net/.default",),
        {"tenant_id": "tenant-a"},
    )


def test_auth_value_hides_secrets() -> None:
    assert "s3cret" not in repr(RegistryAuth.basic(USER, "s3cret"))
    assert "tok-123" not in repr(RegistryAuth.refresh_token("tok-123"))


def test_token_service_outage_is_retried(
    registry: Registry, token_registry: tuple[Registry, TokenService]
) -> None:
    from replicator.adapters.oci.transport import RetryPolicy

    target, service = token_registry
    service.fail_next = 2  # two 503s from the token service first
    slept: list[float] = []
    with Registries(retry=RetryPolicy(sleep=slept.append)) as registries:
        _copy_in(registries, registry, target, "team/app")
    assert service.requests[:2] == ["GET /oauth2/token"] * 2
    assert slept[:2] == [0.0, 0.0]  # Retry-After: 0 honoured


def test_the_token_cache_is_bounded_least_recently_used_out() -> None:
    """Issue 14 item 7: a long-lived worker sees many repositories; the tokens kept per
    registry are bounded, the least recently used dropped first (and fetched again)."""
    import httpx

    from replicator.adapters.oci.auth import Authenticator
    from replicator.adapters.oci.transport import RetryPolicy

    fetched: list[str] = []

    def token_service(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.params["scope"])
        return httpx.Response(200, json={"token": f"t-{len(fetched)}", "expires_in": 300})

    challenge = 'Bearer realm="https://reg.example/token",service="reg.example"'
    request = httpx.Request("GET", "https://reg.example/v2/a/tags/list")
    refused = httpx.Response(401, headers={"WWW-Authenticate": challenge}, request=request)
    scopes = [(f"repository:r{i}:pull",) for i in range(4)]
    with httpx.Client(transport=httpx.MockTransport(token_service)) as http:
        auth = Authenticator(
            "reg.example", RegistryAuth.anonymous(), http, RetryPolicy(), max_tokens=2
        )
        assert auth.challenged(refused, scopes[0], 0)
        auth.ensure(scopes[1])
        assert auth.headers(scopes[0])  # r0 used again: r1 is now the oldest
        auth.ensure(scopes[2])  # evicts r1
        assert auth.headers(scopes[0]) and auth.headers(scopes[2])
        assert auth.headers(scopes[1]) == {}
        auth.ensure(scopes[1])  # fetched again
    assert fetched == [
        "repository:r0:pull",
        "repository:r1:pull",
        "repository:r2:pull",
        "repository:r1:pull",
    ]


def test_no_authorization_for_a_url_off_the_registrys_origin() -> None:
    import httpx

    from replicator.adapters.oci.auth import Authenticator
    from replicator.adapters.oci.transport import RetryPolicy

    request = httpx.Request("GET", "https://reg.example/v2/")
    basic = httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}, request=request)
    with httpx.Client() as http:
        auth = Authenticator("reg.example", RegistryAuth.basic(USER, PASSWORD), http, RetryPolicy())
        assert auth.challenged(basic, (), 0)
        assert auth.headers((), "https://reg.example/v2/a/blobs/uploads/1")
        assert auth.headers((), "https://reg.example:443/v2/")  # the same origin, spelt out
        for elsewhere in (
            "https://storage.example/blob",
            "http://reg.example/v2/",  # another scheme
            "https://reg.example:8443/v2/",  # another port
            "https://reg.example.evil/v2/",
        ):
            assert auth.headers((), elsewhere) == {}, elsewhere
        foreign = httpx.Request("GET", "https://storage.example/blob")
        assert not auth.challenged(
            httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'}, request=foreign),
            (),
            0,
        )


def test_no_secret_goes_over_plain_http_to_a_host_that_is_not_loopback() -> None:
    """A registry spoken to over plain HTTP (REPLICATOR_PLAIN_HTTP) off this machine gets
    no basic credentials and no Entra token; nor does a plain-HTTP token realm."""
    import httpx

    from replicator.adapters.oci.auth import Authenticator
    from replicator.adapters.oci.transport import RetryPolicy

    sent: list[str] = []

    def network(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200, json={"token": "t", "refresh_token": "r"})

    def refused(url: str, challenge: str) -> httpx.Response:
        request = httpx.Request("GET", url)
        return httpx.Response(401, headers={"WWW-Authenticate": challenge}, request=request)

    basic = RegistryAuth.basic(USER, PASSWORD, realms=["http://auth.lan"])
    entra = RegistryAuth.azure(EntraCredential("entra"))
    with httpx.Client(transport=httpx.MockTransport(network)) as http:
        mirror = Authenticator("mirror.lan:5000", basic, http, RetryPolicy(), scheme="http")
        with pytest.raises(PermanentRegistryError, match="never sent over plain HTTP"):
            mirror.challenged(refused("http://mirror.lan:5000/v2/", 'Basic realm="m"'), (), 0)
        assert mirror.headers((), "http://mirror.lan:5000/v2/") == {}
        secure = Authenticator("reg.example", basic, http, RetryPolicy())
        plain_realm = 'Bearer realm="http://auth.lan/token",service="s"'
        with pytest.raises(PermanentRegistryError, match="no credentials sent there"):
            secure.challenged(refused("https://reg.example/v2/", plain_realm), ("s",), 0)
        same_host = 'Bearer realm="http://reg.example/token",service="s"'
        with pytest.raises(PermanentRegistryError, match="no credentials sent there"):
            secure.challenged(refused("https://reg.example/v2/", same_host), ("s",), 0)
        plain = Authenticator("mirror.lan:5000", entra, http, RetryPolicy(), scheme="http")
        own = 'Bearer realm="http://mirror.lan:5000/oauth2/token",service="m"'
        with pytest.raises(PermanentRegistryError, match="plain HTTP off this machine"):
            plain.challenged(refused("http://mirror.lan:5000/v2/", own), ("s",), 0)
    assert sent == []


def test_a_refresh_token_goes_to_the_registrys_own_realm_as_named() -> None:
    """An identity token (Docker config) for a registry that is not an ACR is posted to
    the realm its challenge names, on its own origin, whatever the realm's path."""
    import httpx

    from replicator.adapters.oci.auth import Authenticator
    from replicator.adapters.oci.transport import RetryPolicy

    posted: list[tuple[str, str]] = []

    def token_service(request: httpx.Request) -> httpx.Response:
        posted.append((str(request.url), request.content.decode()))
        return httpx.Response(200, json={"access_token": "a", "expires_in": 300})

    realm = 'Bearer realm="https://reg.example/service/token",service="reg"'
    request = httpx.Request("GET", "https://reg.example/v2/a/tags/list")
    refused = httpx.Response(401, headers={"WWW-Authenticate": realm}, request=request)
    auth = RegistryAuth.refresh_token("identity-1")
    with httpx.Client(transport=httpx.MockTransport(token_service)) as http:
        authenticator = Authenticator("reg.example", auth, http, RetryPolicy())
        assert authenticator.challenged(refused, ("repository:a:pull",), 0)
    assert [url for url, _ in posted] == ["https://reg.example/service/token"]
    assert "refresh_token=identity-1" in posted[0][1]


@pytest.mark.parametrize(
    ("host", "realm", "allowed"),
    [
        ("registry-1.docker.io", "https://auth.docker.io/token", True),  # Docker Hub's own
        ("registry-1.docker.io", "https://auth.docker.io.evil/token", False),
        ("reg.example", "https://auth.docker.io/token", False),  # not reg.example's
        ("reg.example", "https://reg.example/token", True),
        ("reg.example", "https://tokens.example/t", False),
    ],
)
def test_basic_credentials_go_only_to_a_realm_on_the_origin_or_allowed(
    host: str, realm: str, allowed: bool
) -> None:
    import httpx

    from replicator.adapters.oci.auth import Authenticator
    from replicator.adapters.oci.transport import RetryPolicy

    asked: list[str] = []

    def token_service(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.url.scheme}://{request.url.host}{request.url.path}")
        return httpx.Response(200, json={"token": "t", "expires_in": 300})

    challenge = f'Bearer realm="{realm}",service="s"'
    request = httpx.Request("GET", f"https://{host}/v2/a/tags/list")
    refused = httpx.Response(401, headers={"WWW-Authenticate": challenge}, request=request)
    with httpx.Client(transport=httpx.MockTransport(token_service)) as http:
        auth = Authenticator(host, RegistryAuth.basic(USER, PASSWORD), http, RetryPolicy())
        if allowed:
            assert auth.challenged(refused, ("repository:a:pull",), 0)
            assert asked == [realm]
        else:
            with pytest.raises(PermanentRegistryError, match="no credentials sent there"):
                auth.challenged(refused, ("repository:a:pull",), 0)
            assert asked == []
