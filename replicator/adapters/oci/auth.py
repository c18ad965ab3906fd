"""Registry authentication: anonymous, basic, bearer challenge, ACR Entra exchange.

``RegistryAuth`` (``replicator.adapters.oci.credentials``) says *who* we are to a registry;
``Authenticator`` answers the registry's ``Www-Authenticate`` challenges for one host:
basic credentials, or a bearer token per scope, cached until it expires and renewed on a
401. For ACR with an Azure credential the token comes from ``/oauth2/exchange`` then
``/oauth2/token``. Tokens and passwords never reach a log.

Credentials stay home. Entra access tokens and ACR refresh tokens go only to the
registry's own ``/oauth2/exchange`` and ``/oauth2/token`` (for an ACR, always
``https://<login server>/oauth2/...``, whatever realm a challenge names). Basic
credentials go to the registry's origin and to a token realm on that origin or one the
``RegistryAuth`` allows, never over plain HTTP to a host that is not loopback; a
challenge naming any other realm is refused with one line, nothing sent. No header goes to
a URL off the registry's origin (an upload ``Location`` elsewhere, a redirect: httpx drops
``Authorization`` on a redirect to another origin). Token answers are read bounded; the
token cache is an LRU.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from replicator.adapters.oci.credentials import AuthKind, RegistryAuth, acr_audience
from replicator.adapters.oci.paging import origin, same_origin
from replicator.adapters.oci.transport import (
    RetryPolicy,
    error_for,
    read_limited,
    retry_after,
    transport_error,
)
from replicator.domain.errors import PermanentRegistryError
from replicator.domain.model import is_acr_host
from replicator.domain.reference import is_loopback

__all__ = ["Authenticator", "parse_challenge", "scopes_for"]
log = logging.getLogger(__name__)

ACR_NULL_USER = "00000000-0000-0000-0000-000000000000"
DEFAULT_TOKEN_SECONDS = 60.0
EXPIRY_MARGIN = 30.0
_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
MAX_TOKEN_BYTES = 256 * 1024  # a token answer is a few KiB of JSON
MAX_CACHED_TOKENS = 256  # scope sets per registry (one per repository and action set)
# Registries whose token service is documented on another origin (Docker Hub: the token
# realm is auth.docker.io, docs.docker.com "Token Authentication Specification").
KNOWN_REALMS = {
    "registry-1.docker.io": ("https://auth.docker.io",),
    "index.docker.io": ("https://auth.docker.io",),
    "docker.io": ("https://auth.docker.io",),
}


_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags|referrers)(?:/|$)")


def scopes_for(method: str, path: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The token scopes a request needs: ``repository:<name>:<actions>``."""
    if path.startswith("/v2/_catalog"):
        return ("registry:catalog:*",)
    found = _REPO_PATH.match(path)
    if not found:
        return tuple(sorted(extra))
    actions = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "pull,push")
    return tuple(sorted({f"repository:{found.group(1)}:{actions}", *extra}))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


@dataclass
class _Token:
    value: str = field(repr=False)
    expires: float


class Authenticator:
    """Answers one host's challenges; thread-safe; caches a bearer token per scope set."""

    def __init__(
        self,
        host: str,
        auth: RegistryAuth,
        http: httpx.Client,
        retry: RetryPolicy,
        *,
        scheme: str | None = None,
        max_tokens: int = MAX_CACHED_TOKENS,
    ):
        self.host = host
        self.auth = auth
        self.http = http
        self.retry = retry
        self.home = f"{scheme or ('http' if is_loopback(host) else 'https')}://{host}"
        self._basic_ok = not _plain_to_remote(self.home)  # no secret in clear text off-host
        self.max_tokens = max(1, max_tokens)
        self._lock = threading.Lock()
        self._scheme: str | None = None
        self._params: dict[str, str] = {}
        self._tokens: OrderedDict[tuple[str, ...], _Token] = OrderedDict()
        self._gates: OrderedDict[tuple[str, ...], threading.Lock] = OrderedDict()
        self._refresh: _Token | None = None
        self.token_requests = 0

    def headers(
        self, scopes: tuple[str, ...], url: str | httpx.URL | None = None
    ) -> dict[str, str]:
        """The Authorization header to send pre-emptively, if a challenge told us how;
        nothing for a ``url`` off the registry's origin."""
        if url is not None and not same_origin(url, self.home):
            return {}
        with self._lock:
            if self._scheme == "basic" and self.auth.kind is AuthKind.BASIC and self._basic_ok:
                return {"Authorization": _basic(self.auth.username, self.auth.password)}
            token = self._tokens.get(scopes)
            if self._scheme == "bearer" and token and token.expires > time.time():
                self._tokens.move_to_end(scopes)
                return {"Authorization": f"Bearer {token.value}"}
        return {}

    def ensure(self, scopes: tuple[str, ...]) -> None:
        """Fetch a bearer token for ``scopes`` now if the host wants one and none is cached."""
        with self._lock:
            bearer = self._scheme == "bearer"
        if bearer:
            self._renew(scopes, refused="")

    def challenged(self, response: httpx.Response, scopes: tuple[str, ...], round_: int) -> bool:
        """Learn from a 401 (the ``round_``-th of one request); True when a retry makes sense.

        A bearer token is fetched on the first 401 and once more on the second (a cached
        token the registry refused, or one that was stale on arrival): renewed on 401.
        A 401 from another origin than the registry's is not answered.
        """
        if not same_origin(response.request.url, self.home):
            return False
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        with self._lock:
            self._scheme, self._params = scheme, params
        if scheme == "basic":
            if self.auth.kind is AuthKind.BASIC and not self._basic_ok:
                raise PermanentRegistryError(
                    f"{self.host}: basic credentials are never sent over plain HTTP to a host "
                    "that is not loopback (use https)",
                    status=401,
                    operation="authenticate",
                    reference=self.host,
                )
            return self.auth.kind is AuthKind.BASIC and round_ == 0
        if scheme != "bearer" or "realm" not in params or round_ >= 2:
            return False
        self._renew(scopes, refused=response.request.headers.get("Authorization", ""))
        return True

    def _renew(self, scopes: tuple[str, ...], refused: str) -> None:
        """One fetch per scope set at a time: threads refused together share the new token."""
        with self._lock:
            gate = self._gates.setdefault(scopes, threading.Lock())
            self._gates.move_to_end(scopes)
            _trim(self._gates, self.max_tokens)
        with gate:
            with self._lock:
                token = self._tokens.get(scopes)
                if token and token.expires > time.time() and f"Bearer {token.value}" != refused:
                    return  # renewed meanwhile by another thread (or still good)
            fetched = self._fetch(scopes)
            with self._lock:
                self._tokens[scopes] = fetched
                self._tokens.move_to_end(scopes)
                _trim(self._tokens, self.max_tokens)

    # -- where credentials may go -------------------------------------------------------
    def _realm_refused(self, realm: str, why: str) -> PermanentRegistryError:
        return PermanentRegistryError(
            f"{self.host}: token realm {realm[:100]!r} {why}: no credentials sent there",
            operation="token",
            reference=self.host,
        )

    def _allowed_realm(self, realm: str) -> bool:
        """A token realm that may receive this registry's basic credentials."""
        try:
            scheme, host, _ = origin(realm)
        except (httpx.InvalidURL, ValueError, TypeError):
            return False
        if scheme not in {"http", "https"} or _plain_to_remote(realm):
            return False  # never over plain HTTP to a host that is not loopback
        if same_origin(realm, self.home):
            return True
        allowed = (*self.auth.realms, *KNOWN_REALMS.get(self.host, ()))
        if any(same_origin(realm, other) for other in allowed):
            return True
        # the local stack: a loopback registry's token service on another loopback port
        return is_loopback(self.host) and is_loopback(host)

    def _oauth2(self, realm: str) -> str:
        """Where a refresh token may be posted: an ACR's own ``/oauth2/token`` (always
        ``https://<login server>``), else the realm when it may receive credentials."""
        if not self._basic_ok:
            raise self._realm_refused(realm, f"is plain HTTP off this machine ({self.home})")
        if is_acr_host(self.host):
            if not same_origin(realm, self.home):
                raise self._realm_refused(realm, f"is not on {self.home}")
            return f"{self.home}/oauth2/token"
        if not self._allowed_realm(realm):
            raise self._realm_refused(realm, f"is neither on {self.home} nor allowed")
        return realm

    # -- token service ---------------------------------------------------------------
    def _fetch(self, scopes: tuple[str, ...]) -> _Token:
        realm, service = self._params["realm"], self._params.get("service", self.host)
        if self.auth.kind in {AuthKind.AZURE, AuthKind.REFRESH_TOKEN}:
            url = self._oauth2(realm)
            form = {
                "grant_type": "refresh_token",
                "service": service,
                "refresh_token": self._refresh_token(url, service),
            }
            body = self._call("POST", url, data={**form, "scope": " ".join(scopes)})
        else:
            params: list[tuple[str, str]] = [("service", service)]
            params += [("scope", s) for s in scopes]
            auth = None
            if self.auth.kind is AuthKind.BASIC:
                if not self._allowed_realm(realm):
                    raise self._realm_refused(realm, f"is neither on {self.home} nor allowed")
                auth = (self.auth.username, self.auth.password)
            body = self._call("GET", realm, params=params, auth=auth)
        value = body.get("token") or body.get("access_token")
        if not isinstance(value, str) or not value:
            raise PermanentRegistryError(
                f"token service of {self.host} answered without a token",
                operation="token",
                reference=self.host,
            )
        return _Token(value, _expiry(body, value))

    def _refresh_token(self, token_url: str, service: str) -> str:
        """The registry refresh token: given, or ACR's exchange of an Entra token at the
        token service's own ``/oauth2/exchange``."""
        if self.auth.kind is AuthKind.REFRESH_TOKEN:
            return self.auth.password
        with self._lock:
            if self._refresh and self._refresh.expires > time.time():
                return self._refresh.value
        credential = self.auth.credential
        assert credential is not None
        audience = (self.auth.audience or acr_audience(self.host)).removesuffix("/.default")
        entra = credential.get_token(f"{audience}/.default", tenant_id=self.auth.tenant).token
        form = {"grant_type": "access_token", "service": service, "access_token": entra}
        if self.auth.tenant:
            form["tenant"] = self.auth.tenant
        scheme, host, port = origin(token_url)
        exchange = f"{scheme}://{_netloc(host, port)}/oauth2/exchange"
        body = self._call("POST", exchange, data=form)
        value = body.get("refresh_token")
        if not isinstance(value, str) or not value:
            raise PermanentRegistryError(
                f"{self.host} /oauth2/exchange answered without a refresh token",
                operation="token exchange",
                reference=self.host,
            )
        token = _Token(value, _expiry({}, value, default=3600.0))
        with self._lock:
            self._refresh = token
        return value

    def _call(
        self, method: str, url: str, auth: tuple[str, str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """One token service call, its answer read bounded and never redirected."""

        def once() -> dict[str, Any]:
            self.token_requests += 1
            request = self.http.build_request(method, url, **kwargs)
            self.retry.before_request(self.host, method, request.url)  # the token bucket
            try:
                response = self.http.send(request, auth=auth, stream=True, follow_redirects=False)
            except httpx.TransportError as exc:
                raise transport_error(exc, "token", self.host) from None
            try:
                if response.status_code == 429:
                    self.retry.throttled(self.host, method, retry_after(response), request.url)
                if response.status_code != 200:
                    raise error_for(response, "token", self.host)
                content = read_limited(
                    response, self.host, limit=MAX_TOKEN_BYTES, what="token answer"
                )
            finally:
                response.close()
            try:
                body = json.loads(content)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise PermanentRegistryError(
                    f"token service of {self.host} answered non-JSON",
                    operation="token",
                    reference=self.host,
                )
            return body

        return self.retry.run(f"token for {self.host}", once)


def _plain_to_remote(url: str) -> bool:
    """Whether ``url`` is plain HTTP to a host that is not loopback."""
    scheme, host, _ = origin(url)
    return scheme != "https" and not is_loopback(host)


def _trim(cache: OrderedDict[Any, Any], size: int) -> None:
    while len(cache) > size:
        cache.popitem(last=False)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _expiry(body: dict[str, Any], token: str, default: float = DEFAULT_TOKEN_SECONDS) -> float:
    """When to stop using ``token``: ``expires_in``, else the JWT ``exp``, else a default."""
    now = time.time()
    seconds = body.get("expires_in")
    if isinstance(seconds, int | float) and seconds > 0:
        return now + max(float(seconds) - EXPIRY_MARGIN, float(seconds) / 2)
    exp = _jwt_exp(token)
    if exp is not None:
        return exp - EXPIRY_MARGIN
    return now + default


def _jwt_exp(token: str) -> float | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None
