"""Memory stays bounded against a hostile registry: a manifest that never ends and a
listing that pages forever are cut off with an error (a scripted server: no real
registry can be made to misbehave like this)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from replicator.adapters.oci.listing import RegistryLister
from replicator.adapters.oci.registries import Registries
from replicator.domain.errors import PermanentRegistryError
from replicator.domain.manifests import MAX_MANIFEST_BYTES, OCI_MANIFEST
from replicator.domain.reference import ImageRef

ENDLESS_CAP = 64 * MAX_MANIFEST_BYTES  # the server gives up by itself past this


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served: list[str]

    def do_GET(self) -> None:
        self.served.append(self.path)
        url = urlsplit(self.path)
        if url.path == "/v2/":
            self._json({})
        elif url.path in ("/v2/endless/manifests/v1", "/v2/huge/tags/list"):
            self._endless()
        elif url.path == "/v2/liar/manifests/v1":
            self.send_response(200)
            self.send_header("Content-Type", OCI_MANIFEST)
            self.send_header("Content-Length", str(10 * MAX_MANIFEST_BYTES))
            self.end_headers()
            self.wfile.write(b"{")
            self.close_connection = True
        elif url.path in ("/v2/_catalog", "/v2/deep/tags/list"):
            page = int(parse_qs(url.query).get("last", ["0"])[0])
            key = "repositories" if url.path == "/v2/_catalog" else "tags"
            link = f'<{url.path}?n=1&last={page + 1}>; rel="next"'
            self._json({key: [f"x{page}"]}, {"Link": link})
        else:
            self.send_error(404)

    def _json(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _endless(self) -> None:
        """A JSON manifest that never ends (chunked, no length)."""
        self.send_response(200)
        self.send_header("Content-Type", OCI_MANIFEST)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b'{"a":"' + b"x" * 65536
        sent = 0
        try:
            while sent < ENDLESS_CAP:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:
            pass  # the client hung up: what we want
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def hostile() -> Iterator[tuple[str, list[str]]]:
    served: list[str] = []
    handler = type("Handler", (Hostile,), {"served": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_endless_manifest_is_cut_off(hostile: tuple[str, list[str]]) -> None:
    host, _ = hostile
    with Registries() as registries, pytest.raises(PermanentRegistryError, match="byte limit"):
        registries.client(host).get_manifest(ImageRef(host, "endless", "v1"))


def test_manifest_declaring_a_huge_length_is_refused_before_reading(
    hostile: tuple[str, list[str]],
) -> None:
    host, _ = hostile
    with Registries() as registries, pytest.raises(PermanentRegistryError, match="byte limit"):
        registries.client(host).get_manifest(ImageRef(host, "liar", "v1"))


@pytest.mark.parametrize("what", ["catalog", "tags"])
def test_endless_listing_is_cut_off_with_an_error(
    hostile: tuple[str, list[str]], what: str
) -> None:
    host, served = hostile
    with Registries() as registries:
        lister = RegistryLister(registries.client(host), host, max_pages=50, page_size=1)
        listing = lister.listing(None if what == "catalog" else ["deep"])
    assert not listing.complete
    assert "over 50 pages" in listing.errors[0]
    assert listing.failed == frozenset({"" if what == "catalog" else "deep"})
    pages = [p for p in served if p.startswith(("/v2/_catalog", "/v2/deep/tags"))]
    assert len(pages) == 50


def test_one_endless_listing_page_is_cut_off_not_read_whole(
    hostile: tuple[str, list[str]],
) -> None:
    host, served = hostile
    with Registries() as registries:
        listing = RegistryLister(registries.client(host), host).listing(["huge"])
    assert not listing.complete
    assert listing.failed == frozenset({"huge"})
    assert "byte limit" in listing.errors[0]
    assert served.count("/v2/huge/tags/list?n=1000") >= 1
