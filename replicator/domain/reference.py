"""Registry references, parsed once into values that reject what is invalid.

Grammar from the distribution spec (``distribution/reference``): a repository is path
components of lowercase alphanumerics joined by ``.``, ``_``, ``__`` or runs of ``-``,
separated by ``/``; a tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; a digest is
``algorithm:hex`` with sha256 (64 hex) or sha512 (128 hex). A registry is a host name or
IPv4 address, or an IPv6 literal in brackets (RFC 3986 "IP-literal": ``[::1]:5000``), with
an optional port.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from replicator.domain.errors import InvalidReferenceError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
HOST_RE = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]{{1,5}})?$")
IPV6_HOST_RE = re.compile(r"^\[([0-9A-Fa-f:.]{2,45})\](?::([0-9]{1,5}))?$")
MAX_REPOSITORY = 255


def parse_registry(value: str) -> str:
    """A registry login server, ``host``, ``host:port`` or ``[ipv6]:port``; lowercased (an
    IPv6 literal in its compressed form, so one registry has one spelling)."""
    if not isinstance(value, str):
        raise InvalidReferenceError(f"invalid registry host {value!r}")
    literal = IPV6_HOST_RE.match(value)
    if literal:
        try:
            address = ipaddress.IPv6Address(literal.group(1))
        except ValueError:
            raise InvalidReferenceError(f"invalid IPv6 address in registry {value!r}") from None
        port = literal.group(2) or ""
        host = f"[{address.compressed}]"
    elif HOST_RE.match(value):
        host, _, port = value.lower().partition(":")
    else:
        raise InvalidReferenceError(f"invalid registry host {value!r}")
    if port and not 0 < int(port) < 65536:
        raise InvalidReferenceError(f"invalid port in registry host {value!r}")
    return f"{host}:{port}" if port else host


def split_host(registry: str) -> tuple[str, str]:
    """``(host, port)`` of a registry as ``parse_registry`` spells it (IPv6 unbracketed)."""
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = registry.partition(":")
    return host, port


def parse_repository(value: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_REPOSITORY or not REPOSITORY_RE.match(value):
        raise InvalidReferenceError(
            f"invalid repository {value!r} (lowercase letters, digits and . _ - / only)"
        )
    return value


def parse_tag(value: str) -> str:
    if not isinstance(value, str) or not TAG_RE.match(value):
        raise InvalidReferenceError(f"invalid tag {value!r}")
    return value


def parse_digest(value: str) -> str:
    if not isinstance(value, str) or not DIGEST_RE.match(value):
        raise InvalidReferenceError(f"invalid digest {value!r} (expected sha256:<64 hex>)")
    return value


def is_loopback(registry: str) -> bool:
    """Whether ``registry`` (``host[:port]``, ``[ipv6][:port]``, or a bare host or IP
    address as a URL names it) is on this machine: ``localhost``, 127/8 or ``::1``."""
    host = registry.lower()
    if host.startswith("[") or host.count(":") <= 1:
        host = split_host(host)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, order=True)
class ImageRef:
    """``registry/repository[:tag][@digest]``; at least one of tag or digest for an image."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        parse_registry(self.registry)
        parse_repository(self.repository)
        if self.tag is not None:
            parse_tag(self.tag)
        if self.digest is not None:
            parse_digest(self.digest)

    @classmethod
    def parse(cls, text: str, *, require_image: bool = True) -> ImageRef:
        """Parse ``HOST[:PORT]/REPO[:TAG|@DIGEST]`` (a tag and a digest together are allowed)."""
        if not isinstance(text, str) or not text or len(text) > 1024:
            raise InvalidReferenceError(f"invalid reference {text!r}")
        registry, slash, rest = text.partition("/")
        if not slash or not rest:
            raise InvalidReferenceError(
                f"invalid reference {text!r}: expected HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]"
            )
        name, at, digest = rest.partition("@")
        tag: str | None = None
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, _, tag = name.rpartition(":")
        ref = cls(
            registry=parse_registry(registry),
            repository=parse_repository(name),
            tag=parse_tag(tag) if tag is not None else None,
            digest=parse_digest(digest) if at else None,
        )
        if require_image and ref.tag is None and ref.digest is None:
            raise InvalidReferenceError(f"invalid reference {text!r}: name a tag or a digest")
        return ref

    @property
    def reference(self) -> str:
        """What goes in ``/v2/<name>/manifests/<reference>``: the digest if known, else the tag."""
        ref = self.digest or self.tag
        if ref is None:
            raise InvalidReferenceError(f"{self} names no tag or digest")
        return ref

    def with_digest(self, digest: str | None) -> ImageRef:
        return ImageRef(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> ImageRef:
        return ImageRef(self.registry, self.repository, tag, self.digest)

    def with_registry(self, registry: str) -> ImageRef:
        return ImageRef(registry, self.repository, self.tag, self.digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
