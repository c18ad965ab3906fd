"""A hostile or broken registry, through the client, the listings, the copy and the worker:
nothing the registry's credentials cover leaves its origin, every body from it is read
bounded, a refusal on one repository is that image's error, and IPv6 literals work.

Registries here are real distribution registries behind ``doubles.hostile`` (a proxy that
lies where a test tells it to), or scripted answers where nothing real is needed.
"Another origin" is ``Elsewhere``, bound to this machine's non-loopback address where it
has one (a different host: no loopback exception applies), and asserted on: what it
received, and that it received nothing carrying a credential.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from devstack.hostile import (
    INDEX,
    Answer,
    Challenge,
    Elsewhere,
    HostileRegistry,
    endless,
    on,
    running,
    sized,
)
from devstack.localstack import Registry, find_registry_binary, registry_config
from devstack.testimages import push_test_image
from replicator.adapters.oci.auth import Authenticator
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.credentials import RegistryAuth
from replicator.adapters.oci.listing import RegistryLister
from replicator.adapters.oci.paging import UnreadListing
from replicator.adapters.oci.referrers import fallback_tag, list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.domain.errors import PermanentRegistryError, RegistryError, TransientRegistryError
from replicator.domain.reference import ImageRef

pytestmark = pytest.mark.integration

USER, PASSWORD = "replicator", "s3cret-pass"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
DIGEST = "sha256:" + "ab" * 32
MiB = 1024 * 1024
NO_WAIT = RetryPolicy(attempts=2, sleep=lambda _s: None)


def _other_address() -> str:
    """A non-loopback address of this machine (another host, as far as origins go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent
            address = str(probe.getsockname()[0])
        except OSError:
            address = "127.0.0.2"
    return address if not address.startswith("127.") else "127.0.0.2"


OTHER = _other_address()


@pytest.fixture
def elsewhere() -> Iterator[Elsewhere]:
    thief = Elsewhere(OTHER)
    with running(thief):
        yield thief


@pytest.fixture
def hostile(registry: Registry) -> Iterator[HostileRegistry]:
    proxy = HostileRegistry(registry.host)
    with running(proxy):
        yield proxy


def _guard(proxy: HostileRegistry, scheme: str) -> Callable[[str], RegistryAuth | None]:
    """The registry demands ``basic`` credentials, or a ``bearer`` token from its own
    realm (``/token``, given for the basic credentials); returns the client's credentials."""
    if scheme == "basic":
        proxy.challenge = Challenge('Basic realm="hostile"', frozenset({BASIC}))
    else:
        realm = f'Bearer realm="{proxy.origin}/token",service="hostile"'
        proxy.challenge = Challenge(realm, frozenset({"Bearer good"}))
        proxy.rules.append(on("GET", "/token", lambda _p: Answer.json(200, {"token": "good"})))
    return lambda host: RegistryAuth.basic(USER, PASSWORD) if host == proxy.host else None


def _no_credentials_reached(thief: Elsewhere) -> None:
    for seen in thief.seen:
        assert "authorization" not in seen.headers, seen
        assert "good" not in json.dumps(seen.headers)
        assert PASSWORD not in json.dumps(seen.headers)


# -- a foreign next link on every paged path ------------------------------------------------
PAGED = {
    "catalog": ("/v2/_catalog", {"repositories": ["a"]}, "application/json"),
    "tags": ("/v2/team/app/tags/list", {"name": "team/app", "tags": ["v1"]}, "application/json"),
    "acr-catalog": ("/acr/v1/_catalog", {"repositories": ["a"]}, "application/json"),
    "acr-manifests": (
        "/acr/v1/team/app/_manifests",
        {"manifests": [{"digest": DIGEST, "tags": ["v1"]}]},
        "application/json",
    ),
    "referrers": (
        f"/v2/team/app/referrers/{DIGEST}",
        {"schemaVersion": 2, "mediaType": INDEX, "manifests": []},
        INDEX,
    ),
}


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
@pytest.mark.parametrize("paged", sorted(PAGED))
def test_a_next_link_to_another_origin_is_never_followed(
    hostile: HostileRegistry, elsewhere: Elsewhere, paged: str, scheme: str
) -> None:
    """Issue 14 item 1: a page whose ``Link`` names another origin (absolute, or
    scheme-relative) leaves the listing unread; that origin receives nothing at all."""
    path, body, kind = PAGED[paged]
    for link in (f"{elsewhere.origin}/v2/x?last=a", f"//{elsewhere.host}/v2/x?last=a"):
        header = f'<{link}>; rel="next"'

        def page(_path: str, header: str = header) -> Answer:
            return Answer.json(200, body, content_type=kind, Link=header)

        hostile.rules = [on("GET", path, page)]
        with Registries(credentials=_guard(hostile, scheme), retry=NO_WAIT) as registries:
            client = registries.client(hostile.host)
            if paged == "referrers":
                with pytest.raises(UnreadListing, match=r"leaves .* not followed") as unread:
                    list_referrers(registries, client, "team/app", DIGEST)
                assert isinstance(unread.value, TransientRegistryError)
                continue
            lister = RegistryLister(client, hostile.host, acr=paged.startswith("acr"))
            listing = lister.listing(None if "catalog" in paged else ["team/app"])
        assert not listing.complete
        assert "leaves" in listing.errors[0] and "not followed" in listing.errors[0]
    answered = [s for s in hostile.seen if s.path.startswith(path) and "authorization" in s.headers]
    assert len(answered) == 2  # the first page, once per link: nothing after it
    assert elsewhere.seen == []


def test_an_unread_referrers_listing_fails_the_job_with_its_reason(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Any, elsewhere: Elsewhere
) -> None:
    """In the worker: the source's referrers listing names another origin: the job is
    retried (transient), the status row says why, and it never ends as a copy short of
    its referrers."""
    from devstack.localworker import deliver_push, drain, worker_runtime

    upstream, target = registry_pair
    proxy = HostileRegistry(upstream.host)
    link = f'<{elsewhere.origin}/v2/team/app/referrers/x>; rel="next"'
    empty = {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
    proxy.rules = [
        on(
            "GET",
            "/v2/team/app/referrers/",
            lambda _p: Answer.json(200, empty, content_type=INDEX, Link=link),
        )
    ]
    with running(proxy), worker_runtime(proxy, target, fresh_azurite) as (runtime, _counting):
        ref = ImageRef(proxy.host, "team/app", "v1")
        pushed = push_test_image(runtime.registries, ref, referrers=False)
        deliver_push(ref, pushed.digest)
        stats = drain(runtime)
        assert stats.succeeded == 0 and stats.poisoned == 1
        (row,) = runtime.status.images("team/app", "v1")
        assert row["outcome"] != "copied"
        assert "leaves" in str(row["lastError"]) and "not followed" in str(row["lastError"])
    assert elsewhere.seen == []


# -- redirects and upload locations on another origin ----------------------------------------
@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_a_redirect_to_another_origin_carries_no_authorization(
    hostile: HostileRegistry, elsewhere: Elsewhere, scheme: str
) -> None:
    """ACR answers a blob GET with a 307 to storage: the storage origin must not receive
    the registry's ``Authorization`` (httpx drops it on a cross-origin redirect)."""
    storage = f"{elsewhere.origin}/blob/{DIGEST}?sig=abc"
    hostile.rules = [
        on("GET", f"/v2/team/app/blobs/{DIGEST}", lambda _p: Answer(307, {"Location": storage}))
    ]
    with (
        Registries(credentials=_guard(hostile, scheme), retry=NO_WAIT) as registries,
        registries.client(hostile.host).open_blob("team/app", DIGEST) as blob,
    ):
        assert blob.status_code == 200
    assert [(s.method, s.path) for s in elsewhere.seen] == [("GET", f"/blob/{DIGEST}?sig=abc")]
    _no_credentials_reached(elsewhere)
    guarded = [s for s in hostile.seen if s.path.startswith("/v2/team/app/blobs/")]
    assert guarded[-1].headers.get("authorization")  # the registry itself got them


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_an_upload_location_on_another_origin_gets_no_credentials(
    hostile: HostileRegistry, elsewhere: Elsewhere, scheme: str
) -> None:
    location = f"{elsewhere.origin}/upload/1?state=x"
    hostile.rules = [
        on("HEAD", "/v2/team/app/blobs/", lambda _p: Answer(404)),
        on("POST", "/v2/team/app/blobs/uploads/", lambda _p: Answer(202, {"Location": location})),
    ]
    with (
        Registries(credentials=_guard(hostile, scheme), retry=NO_WAIT) as registries,
        pytest.raises(RegistryError),  # Elsewhere answers 200, not 201: not an upload
    ):
        registries.client(hostile.host).push_blob("team/app", b"data", DIGEST)
    assert [s.method for s in elsewhere.seen] == ["PUT"]
    _no_credentials_reached(elsewhere)


# -- token realms -------------------------------------------------------------------------------
def test_a_token_realm_on_another_host_gets_no_basic_credentials(
    hostile: HostileRegistry, elsewhere: Elsewhere
) -> None:
    hostile.challenge = Challenge(
        f'Bearer realm="{elsewhere.origin}/token",service="hostile"', frozenset({"Bearer good"})
    )
    auth = RegistryAuth.basic(USER, PASSWORD)
    with (
        Registries(credentials=lambda _h: auth, retry=NO_WAIT) as registries,
        pytest.raises(PermanentRegistryError, match="no credentials sent there"),
    ):
        registries.client(hostile.host).head_manifest(ImageRef(hostile.host, "a", "v1"))
    assert elsewhere.seen == []


class _Entra:
    def get_token(self, *scopes: str, **_: object) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("entra-secret", 2**31)


def test_a_hostile_realm_never_receives_an_entra_token(
    hostile: HostileRegistry, elsewhere: Elsewhere
) -> None:
    """The exchange URL is not derived from whatever realm the registry names."""
    hostile.challenge = Challenge(
        f'Bearer realm="{elsewhere.origin}/oauth2/token",service="hostile"',
        frozenset({"Bearer good"}),
    )
    auth = RegistryAuth.azure(_Entra())
    with (
        Registries(credentials=lambda _h: auth, retry=NO_WAIT) as registries,
        pytest.raises(PermanentRegistryError, match="no credentials sent there"),
    ):
        registries.client(hostile.host).head_manifest(ImageRef(hostile.host, "a", "v1"))
    assert elsewhere.seen == []


def test_an_acr_exchanges_only_at_its_own_login_server() -> None:
    """For an ACR, Entra and refresh tokens go to ``https://<login server>/oauth2/*`` only,
    even when its challenge names another realm (no loopback or allow-list exception)."""
    seen: list[str] = []

    def network(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"refresh_token": "r", "access_token": "a"})

    auth = RegistryAuth.azure(_Entra())
    request = httpx.Request("GET", "https://dr.azurecr.io/v2/a/tags/list")
    with httpx.Client(transport=httpx.MockTransport(network)) as http:
        authenticator = Authenticator("dr.azurecr.io", auth, http, NO_WAIT)
        for realm in ("https://thief.example/oauth2/token", "http://dr.azurecr.io/oauth2/token"):
            challenge = f'Bearer realm="{realm}",service="dr.azurecr.io"'
            response = httpx.Response(401, headers={"WWW-Authenticate": challenge}, request=request)
            with pytest.raises(PermanentRegistryError, match="no credentials sent there"):
                authenticator.challenged(response, ("repository:a:pull",), 0)
        assert seen == []
        own = 'Bearer realm="https://dr.azurecr.io/oauth2/token",service="dr.azurecr.io"'
        response = httpx.Response(401, headers={"WWW-Authenticate": own}, request=request)
        assert authenticator.challenged(response, ("repository:a:pull",), 0)
    assert seen == ["https://dr.azurecr.io/oauth2/exchange", "https://dr.azurecr.io/oauth2/token"]


# -- bodies of 200 MiB and endless ones ------------------------------------------------------
BODIES: dict[str, Callable[[], Answer]] = {
    "declared-200MiB": lambda: Answer(200, {"Content-Type": INDEX}, sized(200 * MiB), 200 * MiB),
    "chunked-200MiB": lambda: Answer(200, {"Content-Type": INDEX}, sized(200 * MiB)),
    "endless": lambda: Answer(200, {"Content-Type": INDEX}, endless()),
}


T = TypeVar("T")


def _peak(call: Callable[[], T]) -> tuple[T, int]:
    """What ``call`` returns, and the peak Python memory (bytes) allocated while it runs,
    in every thread."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        answer = call()
        return answer, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _failing_peak(call: Callable[[], object], kind: type[Exception], match: str) -> int:
    """The peak memory while ``call`` fails with ``kind`` saying ``match``."""

    def run() -> None:
        with pytest.raises(kind, match=match):
            call()

    return _peak(run)[1]


@pytest.fixture
def registries() -> Iterator[Registries]:
    """Clients that do not pause between retries."""
    with Registries(retry=NO_WAIT) as running:
        yield running


@pytest.mark.parametrize("body", sorted(BODIES))
def test_listing_and_referrers_bodies_are_read_bounded(
    hostile: HostileRegistry, registries: Registries, body: str
) -> None:
    hostile.rules = [
        on("GET", "/v2/big/tags/list", lambda _p: BODIES[body]()),
        on("GET", "/v2/big/referrers/", lambda _p: BODIES[body]()),
    ]
    client = registries.client(hostile.host)
    lister = RegistryLister(client, hostile.host)
    listing, peak = _peak(lambda: lister.listing(["big"]))
    assert not listing.complete and "byte limit" in listing.errors[0]
    assert peak < 40 * MiB, peak
    peak = _failing_peak(
        lambda: list_referrers(registries, client, "big", DIGEST), RegistryError, "byte limit"
    )
    assert peak < 40 * MiB, peak
    assert hostile.host not in registries.referrers_api  # the image's error, not "no API"


@pytest.mark.parametrize("body", sorted(BODIES))
def test_token_answers_are_read_bounded(
    hostile: HostileRegistry, registries: Registries, body: str
) -> None:
    hostile.challenge = Challenge(
        f'Bearer realm="{hostile.origin}/token",service="hostile"', frozenset({"Bearer good"})
    )
    hostile.rules = [on("GET", "/token", lambda _p: BODIES[body]())]
    client = registries.client(hostile.host)
    ref = ImageRef(hostile.host, "a", "v1")
    peak = _failing_peak(lambda: client.head_manifest(ref), RegistryError, "byte limit")
    assert peak < 4 * MiB, peak


@pytest.mark.parametrize("body", sorted(BODIES))
def test_error_bodies_are_read_bounded(
    hostile: HostileRegistry, registries: Registries, body: str
) -> None:
    def failing(_path: str) -> Answer:
        answer = BODIES[body]()
        return Answer(500, {"Content-Type": "application/json"}, answer.body, answer.length)

    hostile.rules = [on("GET", "/v2/big/manifests/", failing), on("GET", "/v2/big/tags/", failing)]
    client = registries.client(hostile.host)
    ref = ImageRef(hostile.host, "big", "v1")
    peak = _failing_peak(lambda: client.get_manifest(ref), TransientRegistryError, "500")
    assert peak < 8 * MiB, peak
    listing, peak = _peak(lambda: RegistryLister(client, hostile.host).listing(["big"]))
    assert not listing.complete and "500" in listing.errors[0]
    assert peak < 8 * MiB, peak


# -- referrers capability -------------------------------------------------------------------
def test_a_403_on_one_repositorys_referrers_is_its_error_and_no_fallback_tags_are_written(
    registry_pair: tuple[Registry, Registry],
) -> None:
    """Issue 14 item 3: the target has the referrers API; it refuses one repository's
    referrers (403). That image fails with the 403; the next image, in another repository,
    gets its referrers listed by the API, and no ``sha256-<hex>`` tag is written anywhere."""
    source, upstream = registry_pair
    target = HostileRegistry(upstream.host, api=True)
    target.rules = [
        on(
            "GET",
            "/v2/locked/app/referrers/",
            lambda _p: Answer.json(403, {"errors": [{"code": "DENIED"}]}),
        )
    ]
    with running(target), Registries(retry=NO_WAIT) as registries:
        locked = push_test_image(registries, ImageRef(source.host, "locked/app", "v1"))
        open_ = push_test_image(registries, ImageRef(source.host, "open/app", "v1"))
        copier = ImageCopier(registries)
        with pytest.raises(PermanentRegistryError, match="403"):
            copier.copy_image(
                ImageRef(source.host, "locked/app", "v1"), ImageRef(target.host, "locked/app", "v1")
            )
        assert registries.referrers_api.get(target.host) is not False
        report = copier.copy_image(
            ImageRef(source.host, "open/app", "v1"), ImageRef(target.host, "open/app", "v1")
        )
        assert report.digest == open_.digest and report.referrers_copied == len(
            open_.referrer_digests
        )
        assert registries.referrers_api[target.host] is True
        listed = list_referrers(
            registries, registries.client(target.host), "open/app", open_.digest
        )
        assert listed.digests and listed.digests <= set(open_.referrer_digests)
    for repository, image in (("open/app", open_), ("locked/app", locked)):
        tags = (
            httpx.get(f"http://{upstream.host}/v2/{repository}/tags/list").json().get("tags") or []
        )
        assert fallback_tag(image.digest) not in tags, tags
        assert not [t for t in tags if t.startswith("sha256-")], tags


def test_a_non_index_referrers_answer_is_the_images_error(
    hostile: HostileRegistry, registries: Registries
) -> None:
    not_an_index = Answer.json(200, {"manifests": []})  # JSON, but no index media type
    hostile.rules = [on("GET", "/v2/a/referrers/", lambda _p: not_an_index)]
    with pytest.raises(UnreadListing, match="not an OCI index"):
        list_referrers(registries, registries.client(hostile.host), "a", DIGEST)
    assert hostile.host not in registries.referrers_api


# -- IPv6 ---------------------------------------------------------------------------------------
def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def ipv6_registry(tmp_path: Path) -> Iterator[str]:
    """A real distribution registry listening on ``[::1]`` only; yields ``[::1]:port``."""
    if not _has_ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback (ip -6 addr): the IPv6 test needs one")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "config.yml"
    config.write_text(
        registry_config(port, tmp_path, {"http": {"addr": f"[::1]:{port}", "secret": "local-v6"}})
    )
    log = (tmp_path / "registry.log").open("w")
    process = subprocess.Popen(
        [find_registry_binary(), "serve", str(config)], stdout=log, stderr=log
    )
    host = f"[::1]:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                process.poll()
                assert process.returncode is None, (tmp_path / "registry.log").read_text()
                import time

                time.sleep(0.05)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_an_ipv6_registry_is_copied_to_and_listed_over_plain_http(
    registry: Registry, ipv6_registry: str
) -> None:
    """Issue 14 item 6: ``[::1]:port`` parses, is loopback (plain HTTP), and works."""
    src = ImageRef(registry.host, "team/app", "v1")
    dst = ImageRef.parse(f"{ipv6_registry}/team/app:v1")
    with Registries() as registries:
        pushed = push_test_image(registries, src)
        report = ImageCopier(registries).copy_image(src, dst)
        assert report.digest == pushed.digest
        assert report.referrers_copied == len(pushed.referrer_digests)
        client = registries.client(dst.registry)
        assert client.base == f"http://{ipv6_registry}"
        listing = RegistryLister(client, dst.registry).listing()
        assert listing.complete
        assert {(e.repository, e.tag) for e in listing.entries} >= {("team/app", "v1")}
