"""The HTTP transport: the standard library's HTTP/1.1 client, pooled, behind httpx.

httpx stays the interface (requests, responses, streams, timeouts, redirects, errors);
this transport replaces httpcore and h11 underneath with ``http.client`` connections kept
alive per origin. Measured on loopback (``bench/RESULTS.md``, ``## diff``), one manifest
HEAD on a kept-alive connection costs 0.37 ms of CPU through httpx's own transport, 0.24
ms through this one and 0.14 ms through bare ``http.client``; httpcore's pool also does
quadratic bookkeeping per request (encode/httpcore#1035), a third of the CPU of a listing
with 16-32 connections open. Listing a registry is thousands of such requests, a copy
is hundreds of 256 KiB reads, and the worker's CPU is what a Functions plan bills.

- At most ``max_connections`` requests at once to each origin (more wait up to the pool
  timeout, then ``httpx.PoolTimeout``). Per origin, not in all: a blob copy holds its
  source connection while it uploads to the target, so with one limit for both, blobs
  copied at once could hold every connection and wait for each other. At most
  ``max_keepalive_connections`` idle connections in all, each dropped after
  ``keepalive_expiry`` seconds or when the server has closed it.
- A connection goes back to the pool only when its response was read to the end and
  neither side asked to close it; anything else closes it.
- Timeouts from the request (connect, read, write, pool), and failures mapped to httpx's
  exceptions (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``...), so callers
  see what they would see from httpx.
- TLS through ``httpx.create_ssl_context`` (certifi, or ``SSL_CERT_FILE``), made on the
  first HTTPS connection. Behind a proxy (``HTTPS_PROXY``...), ``Registries`` keeps httpx's
  own transport, which speaks to proxies; this one does not.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
import time
from collections.abc import Iterator
from typing import NoReturn

import httpx

__all__ = ["PooledTransport"]

READ_CHUNK = 256 * 1024
Origin = tuple[str, str, int]


class PooledTransport(httpx.BaseTransport):
    """HTTP/1.1 keep-alive connections per origin (``scheme``, ``host``, ``port``)."""

    def __init__(self, *, verify: bool | ssl.SSLContext = True, limits: httpx.Limits) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._max = limits.max_connections or 1_000
        self._keepalive = (
            self._max
            if limits.max_keepalive_connections is None
            else limits.max_keepalive_connections
        )
        self._expiry = 5.0 if limits.keepalive_expiry is None else limits.keepalive_expiry
        self._lock = threading.Lock()
        self._slots: dict[Origin, threading.BoundedSemaphore] = {}
        self._idle: list[tuple[Origin, http.client.HTTPConnection, float]] = []
        self._active = 0  # requests holding a connection
        self.opened = 0  # connections made so far (for tests and benchmarks)

    # -- httpx.BaseTransport ---------------------------------------------------------------
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        pool_timeout = timeouts.get("pool")
        origin = _origin(request.url)
        slots = self._slots_for(origin)
        if not slots.acquire(timeout=-1 if pool_timeout is None else pool_timeout):
            raise httpx.PoolTimeout(
                f"no free connection to {origin[1]}:{origin[2]} within {pool_timeout}s",
                request=request,
            )
        with self._lock:
            self._active += 1
        try:
            conn = self._checkout(origin) or self._connect(origin, request, timeouts)
            response = self._exchange(conn, request, timeouts)
        except BaseException:
            self._free_slot(origin)
            raise
        reason = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            response.status,
            headers=response.getheaders(),
            stream=_Body(self, origin, conn, response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    @property
    def connections(self) -> int:
        """Open connections: in use and idle."""
        with self._lock:
            return self._active + len(self._idle)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn, _ in idle:
            conn.close()

    # -- connections -----------------------------------------------------------------------
    def _slots_for(self, origin: Origin) -> threading.BoundedSemaphore:
        with self._lock:
            slots = self._slots.get(origin)
            if slots is None:
                slots = self._slots[origin] = threading.BoundedSemaphore(self._max)
            return slots

    def _checkout(self, origin: Origin) -> http.client.HTTPConnection | None:
        """The most recently used live idle connection to ``origin``, if any."""
        now = time.monotonic()
        stale = []
        found = None
        with self._lock:
            keep = []
            for entry in self._idle:
                _, conn, since = entry
                if now - since > self._expiry:
                    stale.append(conn)
                else:
                    keep.append(entry)
            self._idle = keep
            for index in range(len(self._idle) - 1, -1, -1):
                if self._idle[index][0] == origin:
                    found = self._idle.pop(index)[1]
                    break
        for conn in stale:
            conn.close()
        if found is not None and _server_closed(found):
            found.close()
            return None
        return found

    def _checkin(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        surplus = None
        with self._lock:
            self._idle.append((origin, conn, time.monotonic()))
            if len(self._idle) > self._keepalive:
                surplus = self._idle.pop(0)[1]
        if surplus is not None:
            surplus.close()

    def _connect(
        self, origin: Origin, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> http.client.HTTPConnection:
        scheme, host, port = origin
        timeout = timeouts.get("connect")
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self._ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake and verification
            conn.close()
            raise httpx.ConnectError(str(exc), request=request) from exc
        with self._lock:
            self.opened += 1
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context(verify=self._verify)
            return self._ssl

    def _release(self, origin: Origin, conn: http.client.HTTPConnection, reusable: bool) -> None:
        try:
            if reusable and conn.sock is not None:
                self._checkin(origin, conn)
            else:
                conn.close()
        finally:
            self._free_slot(origin)

    def _free_slot(self, origin: Origin) -> None:
        with self._lock:
            self._active -= 1
        self._slots[origin].release()

    # -- one exchange ----------------------------------------------------------------------
    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        request: httpx.Request,
        timeouts: dict[str, float | None],
    ) -> http.client.HTTPResponse:
        writing = True
        try:
            conn.sock.settimeout(timeouts.get("write"))
            _send(conn, request)
            writing = False
            conn.sock.settimeout(timeouts.get("read"))
            return conn.getresponse()
        except BaseException as exc:
            conn.close()
            _raise_mapped(exc, request, writing=writing)


class _Body(httpx.SyncByteStream):
    """The response body as it arrives; closing it hands the connection back."""

    def __init__(
        self,
        transport: PooledTransport,
        origin: Origin,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: http.client.HTTPConnection | None = conn
        self._response = response
        self._request = request
        self._ended = request.method == "HEAD" or response.status in (204, 304)

    def __iter__(self) -> Iterator[bytes]:
        if self._ended:
            return
        try:
            while chunk := self._response.read1(READ_CHUNK):
                yield chunk
        except Exception as exc:
            _raise_mapped(exc, self._request, writing=False)
        if self._response.length:  # read1 meets the end of the stream quietly: say it
            raise httpx.RemoteProtocolError(
                f"the connection closed {self._response.length} bytes before the end of the body",
                request=self._request,
            )
        self._ended = True

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        reusable = self._ended and not self._response.will_close
        self._response.close()
        self._transport._release(self._origin, conn, reusable)


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}")
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)


def _send(conn: http.client.HTTPConnection, request: httpx.Request) -> None:
    target = request.url.raw_path.decode("ascii")
    conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
    chunked = False
    for name, value in request.headers.raw:
        conn.putheader(name.decode("latin-1"), value)
        chunked = chunked or (name.lower() == b"transfer-encoding" and value.lower() == b"chunked")
    body = request.stream
    if isinstance(body, httpx.ByteStream):  # bytes, sent with the headers
        conn.endheaders(b"".join(body) or None)
        return
    conn.endheaders()
    for chunk in body:  # type: ignore[union-attr]
        if chunked:
            conn.send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunk else b"")
        elif chunk:
            conn.send(chunk)
    if chunked:
        conn.send(b"0\r\n\r\n")


def _server_closed(conn: http.client.HTTPConnection) -> bool:
    """An idle connection the server has closed (or sent something unasked) is unusable.

    ``poll``, not ``select``: a worker holds many sockets, and ``select`` refuses file
    descriptors above 1023."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _raise_mapped(exc: BaseException, request: httpx.Request, *, writing: bool) -> NoReturn:
    """Raise httpx's exception for a failure of ``http.client`` or the socket under it;
    anything else (httpx's own, ours: a lying source mid-upload) as it is."""
    mapped = _mapped(exc, request, writing=writing)
    if mapped is exc:
        raise exc
    raise mapped from exc


def _mapped(exc: BaseException, request: httpx.Request, *, writing: bool) -> BaseException:
    """httpx's exception for a failure of ``http.client`` or the socket under it."""
    kind: type[httpx.TransportError]
    if isinstance(exc, TimeoutError):
        kind = httpx.WriteTimeout if writing else httpx.ReadTimeout
    elif isinstance(exc, http.client.HTTPException):  # RemoteDisconnected, BadStatusLine...
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, OSError):  # reset, broken pipe, TLS errors
        kind = httpx.WriteError if writing else httpx.ReadError
    else:
        return exc  # httpx's own, ours (a lying source mid-upload), or not an I/O failure
    return kind(f"{type(exc).__name__}: {exc}", request=request)
