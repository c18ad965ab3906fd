from __future__ import annotations

import pytest

from replicator.domain.errors import InvalidReferenceError
from replicator.domain.reference import ImageRef, is_loopback

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("contoso.azurecr.io/team/app:1.0", "contoso.azurecr.io", "team/app", "1.0", None),
        (f"127.0.0.1:5001/app@{DIGEST}", "127.0.0.1:5001", "app", None, DIGEST),
        (f"localhost:5000/a/b/c:v1@{DIGEST}", "localhost:5000", "a/b/c", "v1", DIGEST),
        ("Contoso.AzureCR.io/app:Latest", "contoso.azurecr.io", "app", "Latest", None),
    ],
    ids=["tag", "digest", "tag-and-digest", "host-lowercased"],
)
def test_parse(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


@pytest.mark.parametrize(
    "text",
    [
        "contoso.azurecr.io/Team/App:1",
        "contoso.azurecr.io/../etc/passwd:1",
        "contoso.azurecr.io/app",
        "contoso.azurecr.io/app@sha256:short",
        "contoso.azurecr.io/app:-bad",
        "app:1",
        "contoso.azurecr.io//app:1",
        "contoso.azurecr.io/app/:1",
        "contoso.azurecr.io:99999/app:1",
        "evil.com#@contoso.azurecr.io/app:1",
        "",
    ],
    ids=[
        "uppercase",
        "dotdot",
        "no-tag",
        "short-digest",
        "bad-tag",
        "no-registry",
        "double-slash",
        "trailing-slash",
        "bad-port",
        "userinfo-trick",
        "empty",
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        ImageRef.parse(text)


def test_round_trip_and_helpers() -> None:
    ref = ImageRef.parse(f"src.azurecr.io/team/app:v1@{DIGEST}")
    assert ImageRef.parse(str(ref)) == ref
    assert ref.reference == DIGEST
    assert ref.with_digest(None).reference == "v1"
    assert ref.with_registry("dr.azurecr.io").registry == "dr.azurecr.io"
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and not is_loopback("a.io")


IPV6 = [
    ("loopback-with-port", "[::1]:5000/team/app:v1", "[::1]:5000", True),
    ("loopback-long-form", "[0:0:0:0:0:0:0:1]/app:v1", "[::1]", True),
    ("global-uppercase", "[FD00::2]:443/app:v1", "[fd00::2]:443", False),
]


@pytest.mark.parametrize(
    ("text", "registry", "loopback"), [c[1:] for c in IPV6], ids=[c[0] for c in IPV6]
)
def test_ipv6_literal_registries_parse_to_one_spelling(
    text: str, registry: str, loopback: bool
) -> None:
    ref = ImageRef.parse(text)
    assert ref.registry == registry
    assert ref.repository in {"team/app", "app"} and ref.tag == "v1"
    assert str(ImageRef.parse(str(ref))) == str(ref)
    assert is_loopback(ref.registry) is loopback


@pytest.mark.parametrize(
    "registry",
    ["[::1", "[::1]:", "[::1]:70000", "[zz::1]:5000", "::1:5000", "[fe80::1%eth0]:5000", "[]"],
    ids=["unclosed", "empty-port", "port-range", "not-hex", "unbracketed", "zone-id", "empty"],
)
def test_bad_ipv6_registries_are_refused(registry: str) -> None:
    with pytest.raises(InvalidReferenceError):
        ImageRef.parse(f"{registry}/app:v1")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.8.9.10", True),
        ("localhost:1", True),
        ("::1", True),
        ("[::1]:5000", True),
        ("127.example.com:5000", False),
        ("192.0.2.2:5000", False),
        ("[fd00::2]:5000", False),
    ],
)
def test_loopback_is_told_by_address(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
