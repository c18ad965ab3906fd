"""Test doubles: local servers that answer what the real services answer.

``JsonServer`` runs a handler on a loopback port (HTTPS when given a ``trustme`` CA), in a
thread, and stops on exit. ``TokenBook`` is the shared memory of issued tokens: the
identity doubles write to it and the ARM double reads it, as Entra and ARM share trust.
``RoleAssignments`` is Azure RBAC's memory of who holds which built-in role on which
registry: the ARM double and the registry token service (``token_server.AcrExchange``)
both decide from it, with the role table of ``replicator/adapters/acr/roles.json`` (the roles'
published actions and data actions), as ARM and ACR's token endpoint share RBAC.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

import trustme

from replicator.adapters.acr import roles

# (method, path with query, headers, body) -> (status, headers, JSON body or None)
Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], Any]]


@dataclass(frozen=True)
class Principal:
    """Who a token speaks for: an object id in a tenant (a managed identity or an app)."""

    object_id: str
    tenant_id: str
    client_id: str


@dataclass
class TokenBook:
    """Every token the identity doubles issued: token -> (principal, audience)."""

    issued: dict[str, tuple[Principal, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, principal: Principal, audience: str) -> str:
        token = "tok-" + secrets.token_urlsafe(24)
        with self._lock:
            self.issued[token] = (principal, audience.removesuffix("/.default").rstrip("/"))
        return token

    def lookup(self, token: str) -> tuple[Principal, str] | None:
        with self._lock:
            return self.issued.get(token)


@dataclass
class RoleAssignments:
    """(principal object id, scope) -> role keys of ``roles.json``; scopes are resource ids."""

    held: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def assign(self, principal: Principal, role: str, scope: str) -> None:
        """Grant a built-in role (key, name or id in the role table) on ``scope``."""
        key = roles.role(role).key
        with self._lock:
            self.held.setdefault((principal.object_id, scope.lower()), set()).add(key)

    def remove(self, principal: Principal, role: str, scope: str) -> None:
        with self._lock:
            self.held.get((principal.object_id, scope.lower()), set()).discard(roles.role(role).key)

    def roles_of(self, principal: Principal, scope: str) -> tuple[roles.Role, ...]:
        with self._lock:
            keys = sorted(self.held.get((principal.object_id, scope.lower()), set()))
        return tuple(roles.role(key) for key in keys)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, payload = self.server.handle(self.command, self.path, headers, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    handle: Handler


class JsonServer:
    """Serve ``handler`` on ``127.0.0.1``; with ``ca``, over TLS with a cert it issued."""

    def __init__(self, handler: Handler, *, ca: trustme.CA | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _RequestHandler)
        self._server.handle = handler
        scheme = "http"
        if ca is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Served:
    """``start``/``stop``/``url`` for a double whose ``handle`` answers on a ``JsonServer``
    (over TLS when the double has a ``ca`` field). The double, a dataclass, declares
    ``server: JsonServer | None = None`` itself (a default here would become its fields')."""

    server: JsonServer | None

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError

    def start(self) -> Self:
        ca: trustme.CA | None = getattr(self, "ca", None)  # the doubles served over TLS
        self.server = JsonServer(self.handle, ca=ca)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the double first"
        return self.server.url


def split(target: str) -> tuple[str, dict[str, str]]:
    from urllib.parse import parse_qsl

    url = urlsplit(target)
    return url.path, dict(parse_qsl(url.query))


def bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    return value[7:] if value.lower().startswith("bearer ") else None
