"""A streaming HTTP pass-through: the base of the dev stack's layers in front of a registry.

``PassThrough`` forwards each request to ``server.upstream`` (an ``httpx.Client`` on the
registry) as it came (its ``Host`` too, so the registry's ``Location`` headers point back
at the layer), bodies streamed both ways in ``CHUNK``-sized pieces, hop-by-hop headers
dropped, a response without a length re-chunked. A subclass answers some requests itself
and reads a body whole only with ``bounded_body`` (a limit, the rest drained). The registry
not answering is a 502 with a distribution-spec error body ("Error Codes"); a body the
registry cuts short is cut short here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

CHUNK = 256 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
HOP_BY_HOP |= {"proxy-connection", "proxy-authorization", "host", "content-length", "expect"}


class PassThroughServer(ThreadingHTTPServer):
    """A threaded server on a free loopback port in front of ``upstream`` (``host:port``)."""

    daemon_threads = True

    def __init__(self, upstream: str, handler: type[PassThrough]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.upstream_host = upstream
        # no environment proxies, no redirects followed: the client sees the registry's own
        self.upstream = httpx.Client(
            base_url=f"http://{upstream}", trust_env=False, timeout=httpx.Timeout(60.0)
        )

    def server_close(self) -> None:
        super().server_close()
        self.upstream.close()


class PassThrough(BaseHTTPRequestHandler):
    server: PassThroughServer
    protocol_version = "HTTP/1.1"

    def forward(
        self, content: bytes | Iterator[bytes] | None, *, method: str = "", path: str = ""
    ) -> httpx.Response:
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        headers.append(("Host", self.headers.get("Host") or self.server.upstream_host))
        length = self.headers.get("Content-Length")
        if isinstance(content, bytes):
            headers.append(("Content-Length", str(len(content))))
        elif content is not None and length is not None:
            headers.append(("Content-Length", length))
        request = self.server.upstream.build_request(
            method or self.command, path or self.path, headers=headers, content=content
        )
        sent = {k.lower() for k, _ in headers}
        for default in ("accept", "accept-encoding", "user-agent"):  # httpx's, not the client's
            if default not in sent:
                request.headers.pop(default, None)
        try:
            return self.server.upstream.send(request, stream=True)
        except httpx.HTTPError as exc:  # the registry did not answer: a gateway's 502
            data = json.dumps(errors("UNAVAILABLE", f"registry: {exc}")).encode()
            answer = {"Content-Type": "application/json", "Content-Length": str(len(data))}
            return httpx.Response(502, headers=answer, stream=httpx.ByteStream(data))

    def relay(self, response: httpx.Response, extra: dict[str, str] | None = None) -> None:
        try:
            self.send_response(response.status_code)
            for key, value in response.headers.multi_items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            length = response.headers.get("Content-Length")
            no_body = self.command == "HEAD" or response.status_code in (204, 304)
            if length is not None:
                self.send_header("Content-Length", length)
            elif not no_body:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if no_body:
                return
            try:
                for piece in response.iter_raw(CHUNK):
                    self.wfile.write(piece if length is not None else _framed(piece))
            except httpx.HTTPError:  # cut short by the registry: so is the answer relayed
                self.close_connection = True
                return
            if length is None:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            response.close()

    def body_stream(self) -> Iterator[bytes] | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self.chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.exactly(length) if length else None

    def exactly(self, length: int) -> Iterator[bytes]:
        left = length
        while left > 0:
            data = self.rfile.read(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data

    def chunked(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self.exactly(size)
            self.rfile.readline(1024)

    def bounded_body(self, limit: int) -> bytes | None:
        """The whole request body, or None once it runs over ``limit`` (the rest drained)."""
        body = bytearray()
        stream = self.body_stream()
        for data in stream or ():
            if len(body) <= limit:
                body += data
        return bytes(body) if len(body) <= limit else None

    def error(self, status: int, code: str, message: str) -> None:
        headers = {"Content-Type": "application/json"}
        self.answer(status, headers, json.dumps(errors(code, message)).encode())

    def answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def errors(code: str, message: str) -> dict[str, Any]:
    """The error body of spec.md's "Error Codes"."""
    return {"errors": [{"code": code, "message": message, "detail": None}]}


def _framed(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112, 7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)
