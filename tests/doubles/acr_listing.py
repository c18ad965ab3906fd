"""A scripted double of ACR's listing API, on a loopback HTTP server.

A real distribution registry cannot answer ``/acr/v1/...`` nor be made to throttle, so
this double does what ACR does: ``GET /acr/v1/_catalog`` and
``GET /acr/v1/<repo>/_manifests`` in pages of at most ``max_page`` items (whatever ``n``
asks), ordered by name, with ``Link: </acr/v1/...?last=...&n=...>; rel="next"``; 404
``NAME_UNKNOWN`` for an unknown repository; and scripted 429s with ``Retry-After``.

It also untags as ACR does: ``DELETE /acr/v1/{name}/_tags/{reference}``, built from the
operation ``ContainerRegistry_DeleteTag`` of the ACR data-plane spec (azure-rest-api-specs
``specification/containerregistry/data-plane/Azure.ContainerRegistry/stable/2021-07-01/
containerregistry.json``): 202 "The tag is deleted", 404 "The tag was not found" (the spec
names no error code: the distribution-spec codes ``NAME_UNKNOWN`` / ``MANIFEST_UNKNOWN`` are
used). Only the tag goes: the manifest stays, with its other tags, or untagged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class AcrListingDouble:
    """``repositories`` maps a repository to ``{digest: [tags]}``."""

    repositories: dict[str, dict[str, list[str]]]
    max_page: int = 100
    throttle: dict[str, int] = field(default_factory=dict)  # path -> 429s still to answer
    retry_after: str = "0"
    requests: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, target: str, method: str = "GET") -> tuple[int, dict[str, str], Any]:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self._lock:
            self.requests.append(target if method == "GET" else f"{method} {target}")
            left = self.throttle.get(url.path, 0)
            if left:
                self.throttle[url.path] = left - 1
                return 429, {"Retry-After": self.retry_after}, _error("TOOMANYREQUESTS")
        if url.path == "/v2/":
            return 200, {}, {}
        if method == "DELETE":
            return self._delete_tag(url.path)
        if url.path == "/acr/v1/_catalog":
            names = sorted(self.repositories)
            page, link = self._page(url.path, names, query, key=lambda n: n)
            return 200, link, {"repositories": page}
        repository, sep, rest = url.path.removeprefix("/acr/v1/").rpartition("/")
        if url.path.startswith("/acr/v1/") and sep and rest == "_manifests":
            if repository not in self.repositories:
                return 404, {}, _error("NAME_UNKNOWN")
            items = [
                {"digest": digest, "tags": list(tags), "imageSize": 1, "mediaType": "x"}
                for digest, tags in sorted(self.repositories[repository].items())
            ]
            page, link = self._page(url.path, items, query, key=lambda m: m["digest"])
            return 200, link, {"registry": "double", "imageName": repository, "manifests": page}
        return 404, {}, _error("NOT_FOUND")

    def _delete_tag(self, path: str) -> tuple[int, dict[str, str], Any]:
        repository, sep, tag = path.removeprefix("/acr/v1/").partition("/_tags/")
        if not path.startswith("/acr/v1/") or not sep or not tag:
            return 404, {}, _error("NOT_FOUND")
        with self._lock:
            manifests = self.repositories.get(repository)
            if manifests is None:
                return 404, {}, _error("NAME_UNKNOWN")
            for digest, tags in manifests.items():
                if tag in tags:
                    manifests[digest] = [t for t in tags if t != tag]
                    return 202, {}, None
        return 404, {}, _error("MANIFEST_UNKNOWN")

    def _page(
        self, path: str, items: list[Any], query: Mapping[str, str], key: Any
    ) -> tuple[list[Any], dict[str, str]]:
        size = min(int(query.get("n", self.max_page)), self.max_page)
        last = query.get("last")
        rest = [i for i in items if last is None or key(i) > last]
        page = rest[:size]
        if len(rest) <= size:
            return page, {}
        link = f"{path}?{urlencode({'last': key(page[-1]), 'n': size})}"
        return page, {"Link": f'<{link}>; rel="next"'}


def _error(code: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": code.lower(), "detail": None}]}


@contextmanager
def serve(double: AcrListingDouble) -> Iterator[str]:
    """Serve ``double`` on a free loopback port; yields its ``host:port``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer("GET")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def _answer(self, method: str) -> None:
            status, headers, body = double.answer(self.path, method)
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
