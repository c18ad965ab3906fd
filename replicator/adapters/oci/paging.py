"""Paged answers: following ``Link: <...>; rel="next"`` without leaving the registry.

Every paged listing a registry gives (``/v2/_catalog``, ``/v2/<name>/tags/list``, the
referrers API, ACR's ``/acr/v1/...`` listings) names its next page in a ``Link`` header
(distribution spec, "Listing Tags" and "Listing Referrers": RFC 5988 links). A next link
is followed only on the registry's own origin (scheme, host and port, RFC 6454): a link to
another origin would get the registry's credentials sent there, so the listing is reported
unread instead (``UnreadListing``, a transient error: a later run may see a sane answer).
A listing that repeats a page or runs past ``max_pages`` is reported unread too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx

from replicator.domain.errors import TransientRegistryError

DEFAULT_PORTS = {"http": 80, "https": 443}


class UnreadListing(TransientRegistryError):
    """A paged answer that could not be followed to its end."""


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url``, the port made explicit."""
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host.lower(), parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0)


def same_origin(url: str | httpx.URL, home: str | httpx.URL) -> bool:
    try:
        return origin(url) == origin(home)
    except (httpx.InvalidURL, ValueError, TypeError):
        return False


def next_page(response: httpx.Response, home: str, what: str) -> str | None:
    """The path (with its query) of the page after ``response``, or None at the end.

    Raises ``UnreadListing`` when the link leaves ``home`` (the registry's origin,
    ``https://host:port``) or is not a usable URL.
    """
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    try:
        url = response.request.url.join(link)  # relative to the page it came on
    except (httpx.InvalidURL, ValueError, TypeError):
        url = None
    if url is None or not same_origin(url, home):
        raise UnreadListing(
            f"{what}: next-page link {link[:100]!r} leaves {home}: not followed",
            operation="list",
            reference=what,
        )
    path = url.raw_path.decode("ascii", "replace")
    if not path.startswith("/") or path.startswith("//") or not path.isprintable():
        raise UnreadListing(
            f"{what}: unusable next-page link {link[:100]!r}", operation="list", reference=what
        )
    return path


def follow_pages(
    first: str,
    fetch: Callable[[str], httpx.Response | None],
    *,
    home: str,
    what: str,
    max_pages: int,
) -> Iterator[httpx.Response]:
    """Each page of a paged answer, from ``first`` (a path) to the last.

    ``fetch(path)`` answers one page (its body already read, bounded) or None to stop (a
    listing that does not exist). The next page is taken from each answer's ``Link``.
    """
    seen: set[str] = set()
    path: str | None = first
    while path is not None:
        if path in seen:
            raise UnreadListing(f"{what}: page {path[:100]!r} came round again", reference=what)
        if len(seen) >= max_pages:
            raise UnreadListing(f"{what}: over {max_pages} pages", reference=what)
        seen.add(path)
        response = fetch(path)
        if response is None:
            return
        yield response
        path = next_page(response, home, what)
