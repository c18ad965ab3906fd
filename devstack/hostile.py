"""Hostile registries: a real distribution registry behind a proxy that lies where told.

What a broken or hostile registry can send and no real registry can be made to: a
next-page ``Link`` to another origin (distribution spec, "Listing Tags"/"Listing
Referrers" say only that a ``Link`` header names the next page, RFC 5988), a redirect to
another origin (ACR answers blob GETs with a 307 to its storage), a challenge naming a
token realm elsewhere (the Docker token spec lets the realm be any URL), bodies of
hundreds of MiB or without end, a 403 on one repository's referrers, and the referrers
API itself where the registry behind has none (distribution 2.8): ``ReferrersApi``
answers ``GET /v2/<name>/referrers/<digest>`` from the manifests pushed through the
proxy, as distribution spec 1.1 "Listing Referrers" describes (an OCI index of
descriptors with ``artifactType``, 200 even when empty, never 404).

``Elsewhere`` is another origin that records every request it receives with its headers,
to assert what left the registry's origin. Bind it to a non-loopback address of this
machine to stand for another host.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

INDEX = "application/vnd.oci.image.index.v1+json"
CHUNK = b"x" * (64 * 1024)
ENDLESS_CAP = 2 * 1024**3  # the server gives up by itself past this (the test has failed)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names


@dataclass
class Answer:
    """What the proxy answers instead of the registry behind it."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    length: int | None = None  # a Content-Length to declare for an iterable body

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> Answer:
        kind = headers.pop("content_type", "application/json")
        return cls(status, {"Content-Type": kind, **headers}, json.dumps(payload).encode())


def endless() -> Iterator[bytes]:
    """A body that never ends (until the client hangs up or ``ENDLESS_CAP``)."""
    sent = 0
    while sent < ENDLESS_CAP:
        yield CHUNK
        sent += len(CHUNK)


def sized(total: int) -> Iterator[bytes]:
    """``total`` bytes, sent a chunk at a time (one chunk object: the server stays small)."""
    left = total
    while left > 0:
        yield CHUNK if left >= len(CHUNK) else CHUNK[:left]
        left -= len(CHUNK)


Rule = Callable[[str, str], Answer | None]  # (method, path with query) -> answer or None


@dataclass(frozen=True)
class Challenge:
    """What the registry demands: ``header`` is its ``WWW-Authenticate``, ``accept`` the
    ``Authorization`` values it lets through. Paths under ``/token`` are not guarded."""

    header: str
    accept: frozenset[str]

    def refuses(self, path: str, headers: dict[str, str]) -> Answer | None:
        if path.startswith("/token") or headers.get("authorization") in self.accept:
            return None
        return Answer.json(
            401, {"errors": [{"code": "UNAUTHORIZED"}]}, **{"WWW-Authenticate": self.header}
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: _Served, family: int) -> None:
        self.address_family = family
        self.owner = owner
        super().__init__(address, _Handler)


class _Served:
    """A server on a thread: ``origin`` is where it answers, ``seen`` what it was sent."""

    def __init__(self, bind: str = "127.0.0.1") -> None:
        import socket

        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.server = _Server((bind, 0), self, family)
        port = self.server.server_address[1]
        self.host = f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"
        self.origin = f"http://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, handler: BaseHTTPRequestHandler) -> Seen:
        seen = Seen(
            handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()}
        )
        with self._lock:
            self.seen.append(seen)
        return seen

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError


class Elsewhere(_Served):
    """Another origin: records everything, answers a token (what a thief would)."""

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        return Answer.json(200, {"token": "stolen", "access_token": "stolen", "refresh_token": "x"})


class HostileRegistry(_Served):
    """A proxy in front of the registry at ``upstream`` (``host:port``, plain HTTP): each
    request goes to the first ``rules`` entry that answers it, else to the registry."""

    def __init__(self, upstream: str, bind: str = "127.0.0.1", api: bool = False) -> None:
        super().__init__(bind)
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.challenge: Challenge | None = None
        self.referrers = ReferrersApi() if api else None
        self._http = httpx.Client(timeout=60)

    def stop(self) -> None:
        super().stop()
        self._http.close()

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        refused = self.challenge.refuses(path, headers) if self.challenge else None
        if refused is not None:
            return refused
        for rule in self.rules:
            found = rule(method, path)
            if found is not None:
                return found
        if self.referrers is not None:
            found = self.referrers.answer(method, path, headers, body)
            if found is not None:
                return found
        forwarded = {k: v for k, v in headers.items() if k not in {"host", "content-length"}}
        response = self._http.request(
            method,
            f"http://{self.upstream}{path}",
            headers={**forwarded, "host": self.host},
            content=body or None,
        )
        keep = {"content-type", "docker-content-digest", "location", "link", "range"}
        keep |= {"www-authenticate", "docker-upload-uuid", "oci-subject"}
        kept = {k: v for k, v in response.headers.items() if k.lower() in keep}
        if method == "HEAD":
            kept["Content-Length"] = response.headers.get("content-length", "0")
            return Answer(response.status_code, kept, b"")
        return Answer(response.status_code, kept, response.content)


class ReferrersApi:
    """The referrers API over a registry without one: every manifest with a ``subject``
    pushed through the proxy is listed under its subject (distribution spec 1.1)."""

    def __init__(self) -> None:
        self.listed: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        parts = urlsplit(path).path.split("/")
        if method == "GET" and len(parts) > 4 and parts[-2] == "referrers":
            repository = "/".join(parts[2:-2])
            with self._lock:
                found = list(self.listed.get((repository, parts[-1]), []))
            payload = {"schemaVersion": 2, "mediaType": INDEX, "manifests": found}
            return Answer.json(200, payload, content_type=INDEX)
        if method == "PUT" and len(parts) > 4 and parts[-2] == "manifests":
            self._note("/".join(parts[2:-2]), headers, body)
        return None

    def _note(self, repository: str, headers: dict[str, str], body: bytes) -> None:
        import hashlib

        try:
            manifest = json.loads(body)
        except ValueError:
            return
        subject = manifest.get("subject") if isinstance(manifest, dict) else None
        if not isinstance(subject, dict) or "digest" not in subject:
            return
        descriptor = {
            "mediaType": headers.get("content-type", manifest.get("mediaType")),
            "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "size": len(body),
            "artifactType": manifest.get("artifactType")
            or (manifest.get("config") or {}).get("mediaType"),
        }
        with self._lock:
            entries = self.listed.setdefault((repository, subject["digest"]), [])
            if descriptor["digest"] not in [e["digest"] for e in entries]:
                entries.append(descriptor)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        owner = self.server.owner
        seen = owner.record(self)
        body = self._body()
        answer = owner.answer(self.command, self.path, seen.headers, body)
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        if isinstance(answer.body, bytes | bytearray):
            if "Content-Length" not in answer.headers:
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)
            return
        if answer.length is not None:
            self.send_header("Content-Length", str(answer.length))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in answer.body:
                if answer.length is None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
            if answer.length is None:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up: what a bounded reader does
        self.close_connection = True

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def running(*servers: _Served) -> Iterator[None]:
    for server in servers:
        server.start()
    try:
        yield
    finally:
        for server in servers:
            server.stop()


def on(method: str, path_prefix: str, answer: Callable[[str], Answer]) -> Rule:
    """A rule: ``answer(path)`` for ``method`` requests whose path starts with the prefix."""

    def rule(m: str, path: str) -> Answer | None:
        return answer(path) if m == method and path.startswith(path_prefix) else None

    return rule
