"""A token service for a real distribution registry configured with ``auth: token``.

It makes its own signing key and self-signed certificate (ES256 or RS256), which the
registry trusts through ``rootcertbundle``; tokens carry the certificate in ``x5c``. It
answers the Docker token flow (``GET /oauth2/token?service=&scope=``, anonymous or basic)
and ACR's Entra exchange (``POST /oauth2/exchange`` then ``POST /oauth2/token`` with a
refresh token), so both flows run against a real registry.

``registry_config()`` is the ``auth`` section to give ``LocalStack.start_registry``.
Knobs: ``users`` (basic credentials the GET flow requires), ``entra_tokens`` (Entra access
tokens the exchange accepts), ``expired_next`` (how many coming tokens are already expired
while their ``expires_in`` says otherwise), ``fail_next`` (503s to answer first).

With ``acr`` (an ``AcrExchange``) the service stands in for an Azure container registry:
the exchange takes the Entra tokens the identity doubles issued for the registry's
audience, and those for an ARM audience only while the registry's
``azureADAuthenticationAsArmPolicy`` is ``enabled`` (``arm_policy``: its status as ARM
serves it, e.g. ``lambda: fake_acr.arm_audience_policy``; [OAUTH]: "ARM or
containerregistry.azure.net", the latter alone when the policy is disabled), and the
access token carries only the actions the principal's roles on that
registry allow, decided by ``replicator/adapters/acr/roles.py`` from the published role
definitions in the registry's role-assignment mode (pull with AcrPull, AcrPush or the
importer role; push with AcrPush; on ABAC registries only the Repository roles and, for
the catalog, Catalog Lister). The real registry behind then refuses what the token lacks,
as ACR does ([OAUTH] Azure/acr docs/AAD-OAuth.md: the token's ``access`` claim).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from replicator.adapters.acr import roles
from tests.doubles import Principal, RoleAssignments, TokenBook

ISSUER = "acr-replicator-test-issuer"
ACR_AUDIENCE = "https://containerregistry.azure.net"
# The clouds' ARM audiences (the Azure SDKs' ContainerRegistryAudience ARM values)
ARM_AUDIENCES = frozenset(
    {
        "https://management.azure.com",
        "https://management.chinacloudapi.cn",
        "https://management.usgovcloudapi.net",
    }
)
_OPERATIONS: dict[str, roles.Operation] = {"pull": "pull", "push": "push", "delete": "delete"}


@dataclass
class AcrExchange:
    """What an Azure container registry knows at its token endpoints: who an Entra token
    speaks for (``TokenBook``) and what that principal may do there (``RoleAssignments`` on
    ``registry_id``, read through the role table in the registry's mode)."""

    book: TokenBook
    assignments: RoleAssignments
    registry_id: str
    abac: bool = False
    audiences: frozenset[str] = frozenset({ACR_AUDIENCE})
    arm_audiences: frozenset[str] = ARM_AUDIENCES
    arm_policy: Callable[[], str] = lambda: "enabled"  # azureADAuthenticationAsArmPolicy

    def principal(self, entra_token: str) -> Principal | None:
        found = self.book.lookup(entra_token)
        if found is None:
            return None
        principal, audience = found
        if audience in self.audiences:
            return principal
        if audience in self.arm_audiences and self.arm_policy() == "enabled":
            return principal
        return None

    def held(self, principal: Principal) -> tuple[roles.Role, ...]:
        return self.assignments.roles_of(principal, self.registry_id)

    def allowed(self, principal: Principal, kind: str, actions: list[str]) -> list[str]:
        """The requested actions of one scope that the principal's roles permit."""
        held = self.held(principal)
        if kind == "registry":  # registry:catalog:*
            return actions if roles.permits(held, "catalog", abac=self.abac) else []
        wanted = list(_OPERATIONS) if "*" in actions else actions
        return [
            a
            for a in wanted
            if a in _OPERATIONS and roles.permits(held, _OPERATIONS[a], abac=self.abac)
        ]


@dataclass
class TokenService:
    workdir: Path
    service: str = "test-registry"
    algorithm: str = "ES256"
    users: dict[str, str] = field(default_factory=dict)  # empty: anonymous GET allowed
    entra_tokens: set[str] = field(default_factory=set)
    expired_next: int = 0
    fail_next: int = 0
    lifetime: int = 300
    requests: list[str] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    refresh_tokens: set[str] = field(default_factory=set)
    acr: AcrExchange | None = None
    owners: dict[str, Principal] = field(default_factory=dict)  # refresh token -> principal
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.algorithm == "RS256":
            self.key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = self.workdir / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/token"

    def registry_config(self, roots: Path | None = None) -> dict[str, object]:
        """The registry's ``auth.token`` configuration for this service; ``roots``: the
        bundle the registry trusts token signatures from (default: this service's)."""
        return {
            "auth": {
                "token": {
                    "realm": self.realm,
                    "service": self.service,
                    "issuer": ISSUER,
                    "rootcertbundle": str(roots or self.bundle),
                }
            }
        }

    # -- tokens ---------------------------------------------------------------------------
    def token(self, scopes: list[str], principal: Principal | None = None) -> str:
        now = int(time.time())
        with self._lock:
            expired = self.expired_next > 0
            self.expired_next -= 1 if expired else 0
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, listed = rest.rpartition(":")
            actions = listed.split(",")
            if self.acr is not None:
                actions = self.acr.allowed(principal, kind, actions) if principal else []
            access.append({"type": kind, "name": name, "actions": actions})
        claims = {
            "iss": ISSUER,
            "sub": "tester",
            "aud": self.service,
            "jti": secrets.token_hex(8),
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now - 7200 if expired else now + self.lifetime,
            "access": access,
        }
        x5c = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        token = jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"x5c": x5c})
        with self._lock:
            self.issued.append(token)
        return token

    def answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(target)
        with self._lock:
            self.requests.append(f"{method} {url.path}")
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, {"Retry-After": "0"}, {"error": "busy"}
        if method == "GET" and url.path == "/oauth2/token":
            return self._docker(parse_qs(url.query), headers)
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        if method == "POST" and url.path == "/oauth2/exchange":
            return self._exchange(form)
        if method == "POST" and url.path == "/oauth2/token":
            return self._refresh(form)
        return 404, {}, {"error": "not found"}

    def _docker(
        self, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        if self.users:
            user, _, password = (
                base64.b64decode(headers.get("authorization", "Basic ").split(" ", 1)[1] or b"")
                .decode()
                .partition(":")
            )
            if self.users.get(user) != password or not user:
                return (
                    401,
                    {"WWW-Authenticate": 'Basic realm="token"'},
                    {"error": "bad credentials"},
                )
        return 200, {}, {"token": self.token(query.get("scope", [])), "expires_in": self.lifetime}

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if form.get("grant_type") != "access_token":
            return 401, {}, {"error": "invalid Entra token"}
        principal = None
        if self.acr is not None:
            principal = self.acr.principal(form.get("access_token", ""))
            # A principal without any role on the registry is refused at the exchange.
            if principal is None or not self.acr.held(principal):
                return 401, {}, {"error": "invalid Entra token"}
        elif form.get("access_token") not in self.entra_tokens:
            return 401, {}, {"error": "invalid Entra token"}
        if form.get("service") != self.service:
            return 400, {}, {"error": "wrong service"}
        refresh = "refresh-" + secrets.token_hex(8)
        with self._lock:
            self.refresh_tokens.add(refresh)
            if principal is not None:
                self.owners[refresh] = principal
        return 200, {}, {"refresh_token": refresh}

    def _refresh(self, form: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("refresh_token") not in self.refresh_tokens
        ):
            return 401, {}, {"error": "invalid refresh token"}
        scopes = form.get("scope", "").split()
        with self._lock:
            principal = self.owners.get(form["refresh_token"])
        token = self.token(scopes, principal)
        return 200, {}, {"access_token": token, "expires_in": self.lifetime}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, payload = self.server.service.answer(self.command, self.path, headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **extra}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tokens must not reach a log


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, service: TokenService) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.service = service


@contextmanager
def serve(service: TokenService) -> Iterator[TokenService]:
    server = _Server(service)
    service.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
