"""A fault-injecting HTTP proxy in front of a real registry (or any HTTP server).

Everything is forwarded to ``upstream`` as is (the ``Host`` header too, so a registry's
``Location`` headers point back at the proxy) until a scripted ``Fault`` matches::

    with FaultyProxy("127.0.0.1:5001") as proxy:
        proxy.add(Fault("GET", r"/blobs/", "status", status=429, headers={"Retry-After": "1"}))
        proxy.add(Fault("GET", r"/blobs/", "reset", times=1))  # drop the line mid-body
        ...  # talk to proxy.host instead of the registry

Kinds: ``status`` (answer ``status`` without forwarding), ``reset`` (forward, send the
headers and half the body, then reset the connection), ``truncate`` (same, but close
cleanly: a short body under a full ``Content-Length``), ``corrupt`` (forward with the
body's bytes changed, same length: a lying source), ``slow`` (wait ``delay`` seconds, then
forward as is). ``times`` bounds how often a fault
fires (``-1``: always), ``per_path`` makes that bound count for each path on its own (each
blob cut once), and ``every=n`` fires it on every n-th matching request only (a sustained
mix: 429 on every 5th request, 503 on every 7th). ``requests`` records ``"METHOD path"``
of everything received.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}


@dataclass
class Fault:
    method: str  # "*" for any
    path: str  # a regex searched in the request path (with query)
    kind: str  # status | reset | truncate | corrupt | slow
    times: int = 1
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds, for ``slow``
    every: int = 0  # fire on every n-th matching request (0: on each one)
    per_path: bool = False  # ``times`` counts for each path separately
    fired: int = 0
    seen: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and re.search(self.path, path) is not None

    def fires(self, method: str, path: str) -> bool:
        """Whether this request is one the fault fires on (counted if it matches)."""
        if not self.matches(method, path):
            return False
        self.seen += 1
        if self.every and self.seen % self.every:
            return False
        done = self.by_path.get(path, 0) if self.per_path else self.fired
        return self.times < 0 or done < self.times


@dataclass
class FaultyProxy:
    upstream: str  # host:port of the real server
    faults: list[Fault] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append(f"{method} {path}")
            firing = [fault for fault in self.faults if fault.fires(method, path)]
            if not firing:
                return None
            fault = firing[0]
            fault.fired += 1
            fault.by_path[path] = fault.by_path.get(path, 0) + 1
            return fault

    def __enter__(self) -> FaultyProxy:
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._body()
        fault = self.server.proxy.take(self.command, self.path)
        if fault is not None and fault.kind == "status":
            self._answer(fault.status, fault.headers, b'{"errors":[{"code":"INJECTED"}]}')
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        upstream = http.client.HTTPConnection(self.server.proxy.upstream, timeout=60)
        try:
            headers = {  # a header sent several times (skopeo's Accept) goes as one list
                k: ", ".join(self.headers.get_all(k) or [])
                for k in dict.fromkeys(self.headers.keys())
                if k.lower() not in HOP_BY_HOP
            }
            if body or self.command in {"PUT", "POST", "PATCH"}:
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            self._relay(response, fault)
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse, fault: Fault | None) -> None:
        data = response.read()
        if fault is not None and fault.kind == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        declared = response.getheader("Content-Length")
        self.send_header(
            "Content-Length", declared if self.command == "HEAD" and declared else str(len(data))
        )
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is not None and fault.kind in {"reset", "truncate"} and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if fault.kind == "reset":  # RST instead of FIN
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data)

    def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: FaultyProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy
