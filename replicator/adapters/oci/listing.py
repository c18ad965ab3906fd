"""What a registry holds: every ``repository:tag`` and the digest behind it.

ACR answers with digests and tags together (``/acr/v1/_catalog`` then one paged
``/acr/v1/<repo>/_manifests`` per repository), so it costs no request per tag. Any other
OCI registry gets ``/v2/_catalog``, ``/v2/<repo>/tags/list`` and one manifest HEAD per
tag. Every listing follows ``Link: <...>; rel="next"`` to the end on the registry's own
origin (``replicator.adapters.oci.paging``), reads each page bounded, and runs with bounded
concurrency. Retries are the client's alone (``replicator.adapters.oci.transport``: one budget per
request, ``Retry-After`` in both forms): a repository that stays unreadable, or a wait the
layer defers, is reported in ``Listing.errors`` instead of failing the whole run.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from replicator.adapters.oci.paging import UnreadListing, follow_pages
from replicator.adapters.oci.transport import error_for, read_limited
from replicator.domain.errors import NotFoundError, RegistryError, TransientRegistryError
from replicator.domain.model import Descriptor, TagEntry, is_acr_host
from replicator.domain.reference import ImageRef

log = logging.getLogger(__name__)
PAGE_SIZE = 1000  # distribution caps catalog pages at 1000 by default
MAX_PAGE_BYTES = 16 * 1024 * 1024  # a listing page of 1,000 entries is well under 1 MiB
ACR_PAGE_SIZE = 100  # ACR's own page size; Link paging fetches the rest
MAX_PAGES = 10_000  # a listing longer than this is cut off (a registry paging forever)
HEAD_CHUNK = 16  # tags HEADed by one task: fewer tasks, still parallel in a big repository
Allows = Callable[[str, str], bool]
T = TypeVar("T")


class RegistryRequester(Protocol):
    """The slice of ``replicator.adapters.oci`` RegistryClient that listing needs."""

    base: str  # the registry's origin, ``https://host[:port]``

    def request(
        self, method: str, path: str, *, scopes: Iterable[str] = (), stream: bool = False
    ) -> httpx.Response: ...

    def head_manifest(self, ref: ImageRef) -> Descriptor | None: ...


@dataclass(frozen=True)
class Listing:
    registry: str
    entries: tuple[TagEntry, ...]
    repositories: int = 0
    errors: tuple[str, ...] = ()  # one line per repository (or catalog) left unread
    failed: frozenset[str] = frozenset()  # those repositories ("" = the catalog)
    requests: int = 0

    @property
    def complete(self) -> bool:
        return not self.errors


class _Unread(Exception):
    """A listing request that stayed unanswered after the client's retries."""


class RegistryLister:
    """A registry's catalog and tags over a registry client, and whole listings."""

    def __init__(
        self,
        client: RegistryRequester,
        registry: str,
        *,
        acr: bool | None = None,
        concurrency: int = 16,
        page_size: int | None = None,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.client = client
        self.registry = registry
        self.acr = is_acr_host(registry) if acr is None else acr
        self.concurrency = max(1, concurrency)
        self.page_size = page_size or (ACR_PAGE_SIZE if self.acr else PAGE_SIZE)
        self.max_pages = max(1, max_pages)
        self._lock = threading.Lock()
        self.requests = 0

    # -- catalog and tags -------------------------------------------------------------
    def list_repositories(self) -> Iterator[str]:
        path = "/acr/v1/_catalog" if self.acr else "/v2/_catalog"
        scopes = ("registry:catalog:*",)
        for page in self._pages(f"{path}?n={self.page_size}", scopes):
            yield from page.get("repositories") or []

    def list_tags(self, repository: str, allows: Allows | None = None) -> Iterator[TagEntry]:
        if self.acr:
            yield from self._acr_tags(repository, allows)
            return
        names = [t for t in self._oci_tag_names(repository) if not allows or allows(repository, t)]
        for tag in names:
            found = self._head(ImageRef(self.registry, repository, tag))
            if found is not None:
                yield TagEntry(repository, tag, found.digest)

    # -- whole listings ---------------------------------------------------------------
    def listing(
        self,
        repositories: Iterable[str] | None = None,
        allows: Allows | None = None,
        wanted: Callable[[str], bool] | None = None,
    ) -> Listing:
        """Every allowed tag of ``repositories`` (default: the catalog) with its digest;
        ``wanted`` skips whole repositories before any request for their tags."""
        if repositories is None:
            try:
                repositories = list(self.list_repositories())
            except (_Unread, RegistryError) as exc:
                error = f"{self.registry}: the catalog: {exc}"
                return Listing(self.registry, (), 0, (error,), frozenset({""}), self.requests)
        repos = sorted(r for r in set(repositories) if wanted is None or wanted(r))
        results: list[tuple[list[TagEntry], tuple[str, str] | None]] = []
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="list") as pool:
            if self.acr:
                results += pool.map(lambda r: self._guard(r, self._acr_tags, allows), repos)
            else:
                names = list(pool.map(lambda r: self._guard(r, self._oci_tag_names), repos))
                results += [([], error) for _, error in names]
                chunks = [
                    (repo, chunk)
                    for repo, (tags, _) in zip(repos, names, strict=True)
                    for chunk in _chunked([t for t in tags if not allows or allows(repo, t)])
                ]
                results += pool.map(lambda c: self._guard(c[0], self._head_entries, c[1]), chunks)
        entries = [entry for found, _ in results for entry in found]
        errors = [error for _, error in results if error]
        failed = frozenset(repo for repo, _ in errors)
        log.info(
            "listed %s: %d repositories, %d tags, %d requests, %d unread",
            self.registry,
            len(repos),
            len(entries),
            self.requests,
            len(failed),
        )
        return Listing(
            self.registry,
            tuple(entries),
            len(repos),
            tuple(line for _, line in errors),
            failed,
            self.requests,
        )

    def _guard(
        self, repository: str, fn: Callable[..., Iterable[Any]], *args: Any
    ) -> tuple[list[Any], tuple[str, str] | None]:
        try:
            return list(fn(repository, *args)), None
        except (_Unread, RegistryError) as exc:
            return [], (repository, f"{self.registry}/{repository}: {exc}")

    # -- OCI distribution -------------------------------------------------------------
    def _oci_tag_names(self, repository: str) -> Iterator[str]:
        path = f"/v2/{repository}/tags/list?n={self.page_size}"
        for page in self._pages(path, (f"repository:{repository}:pull",), missing_ok=True):
            yield from page.get("tags") or []

    def _head_entries(self, repository: str, tags: list[str]) -> Iterator[TagEntry]:
        for tag in tags:
            found = self._head(ImageRef(self.registry, repository, tag))
            if found is not None:
                yield TagEntry(repository, tag, found.digest)

    def _head(self, ref: ImageRef) -> Descriptor | None:
        return self._call(f"HEAD {ref}", lambda: self.client.head_manifest(ref))

    # -- ACR --------------------------------------------------------------------------
    def _acr_tags(self, repository: str, allows: Allows | None = None) -> Iterator[TagEntry]:
        path = f"/acr/v1/{repository}/_manifests?n={self.page_size}"
        scopes = (f"repository:{repository}:metadata_read",)
        for page in self._pages(path, scopes, missing_ok=True):
            for item in page.get("manifests") or []:
                digest = item.get("digest")
                for tag in item.get("tags") or []:
                    if isinstance(tag, str) and (not allows or allows(repository, tag)):
                        yield TagEntry(repository, tag, digest if isinstance(digest, str) else None)

    # -- paging and retries -----------------------------------------------------------
    def _pages(
        self, path: str, scopes: tuple[str, ...], *, missing_ok: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Each JSON page of a listing, following ``Link: rel="next"`` on the registry's
        origin to the end (``replicator.adapters.oci.paging``)."""
        what = f"{self.registry}{path.split('?')[0]}"

        def fetch(page: str) -> httpx.Response | None:
            response = self._call(f"GET {page}", functools.partial(self._get, page, scopes))
            if response is None and not missing_ok:
                raise _Unread(f"{what}: not found")
            return response

        home = self.client.base
        pages = follow_pages(path, fetch, home=home, what=what, max_pages=self.max_pages)
        try:
            for response in pages:
                try:
                    body = response.json()
                except ValueError:
                    raise _Unread(f"{what}: a page that is not JSON") from None
                yield body if isinstance(body, dict) else {}
        except UnreadListing as exc:
            raise _Unread(str(exc)) from None

    def _get(self, path: str, scopes: tuple[str, ...]) -> httpx.Response | None:
        """One listing page, read whole only up to ``MAX_PAGE_BYTES`` (an endless answer is
        cut off with an error instead of filling memory)."""
        try:
            response = self.client.request("GET", path, scopes=scopes, stream=True)
        except NotFoundError:
            return None
        try:
            return self._page(path, response)
        finally:
            response.close()

    def _page(self, path: str, response: httpx.Response) -> httpx.Response | None:
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_for(response, "list", f"{self.registry}{path.split('?')[0]}")
        body = read_limited(response, path, limit=MAX_PAGE_BYTES, what="listing page")
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=response.request
        )

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """One listing request; the client has retried it already (one retry layer)."""
        with self._lock:
            self.requests += 1
        try:
            return call()
        except httpx.TransportError as exc:
            raise _Unread(f"{what}: {type(exc).__name__}: {exc}") from exc
        except TransientRegistryError as exc:
            raise _Unread(f"{what}: {exc}") from exc


def _chunked(tags: list[str], size: int = HEAD_CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(tags), size):
        yield tags[start : start + size]
