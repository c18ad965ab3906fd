from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.localstack import Registry
from devstack.testimages import manifest_digest, seed
from replicator.adapters.oci.listing import RegistryLister
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.domain.model import TagEntry
from tests.doubles.acr_listing import AcrListingDouble, serve

pytestmark = pytest.mark.integration


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def acr() -> Iterator[tuple[AcrListingDouble, RegistryLister, list[float]]]:
    repositories = {
        f"team{i % 3}/app{i:03d}": {digest(i * 10 + k): [f"v{k}", f"b{k}"] for k in range(3)}
        for i in range(250)
    }
    repositories["team0/app000"][digest(9_999)] = []  # untagged: not a tag entry
    double = AcrListingDouble(repositories, max_page=100)
    slept: list[float] = []
    with serve(double) as host, Registries(retry=RetryPolicy(attempts=4, sleep=slept.append)) as r:
        lister = RegistryLister(r.client(host), host, acr=True, concurrency=8)
        yield double, lister, slept


def test_acr_listing_pages_catalog_and_manifests_to_the_end(
    acr: tuple[AcrListingDouble, RegistryLister, list[float]],
) -> None:
    double, lister, slept = acr
    listing = lister.listing()
    assert listing.complete
    assert listing.repositories == 250
    assert len(listing.entries) == 250 * 6
    assert TagEntry("team0/app249", "b2", digest(2492)) in listing.entries
    catalog_pages = [r for r in double.requests if r.startswith("/acr/v1/_catalog")]
    assert len(catalog_pages) == 3  # 250 repositories in pages of 100
    assert len(double.requests) == 3 + 250  # no request per tag
    assert listing.requests == len(double.requests)
    assert not slept


def test_acr_listing_filters_tags_and_follows_manifest_pages(
    acr: tuple[AcrListingDouble, RegistryLister, list[float]],
) -> None:
    double, lister, _slept = acr
    double.max_page = 2  # three manifests per repository: two pages each
    listing = lister.listing(["team0/app000", "no/such"], allows=lambda r, t: t.startswith("v"))
    assert listing.complete  # an unknown repository has no tags, it is not an error
    assert sorted(e.tag for e in listing.entries) == ["v0", "v1", "v2"]
    assert sum("/team0/app000/_manifests" in r for r in double.requests) == 2


def test_acr_listing_backs_off_on_429_and_reports_what_stayed_unread(
    acr: tuple[AcrListingDouble, RegistryLister, list[float]],
) -> None:
    double, lister, slept = acr
    double.throttle["/acr/v1/_catalog"] = 2
    double.throttle["/acr/v1/team1/app001/_manifests"] = 3  # answered on the last attempt
    double.throttle["/acr/v1/team2/app002/_manifests"] = 100  # never answers
    listing = lister.listing()
    assert not listing.complete
    assert listing.failed == frozenset({"team2/app002"})
    assert "team2/app002" in listing.errors[0]
    assert len(listing.entries) == 249 * 6
    assert any(e.repository == "team1/app001" for e in listing.entries)
    never = [r for r in double.requests if r.startswith("/acr/v1/team2/app002/")]
    assert len(never) == 4  # the client's attempts, once: listing adds no rounds of its own
    assert slept
    assert all(s == 0 for s in slept)  # Retry-After: 0 honoured


def test_acr_catalog_that_never_answers_is_one_error(
    acr: tuple[AcrListingDouble, RegistryLister, list[float]],
) -> None:
    double, lister, _slept = acr
    double.throttle["/acr/v1/_catalog"] = 100
    listing = lister.listing()
    assert listing.failed == frozenset({""})
    assert listing.entries == ()


def test_oci_listing_heads_each_allowed_tag_once_and_pages_past_the_first_page(
    registry: Registry,
) -> None:
    images = [(f"r/app{i:03d}", f"t{k}", i * 10 + k) for i in range(120) for k in range(3)]
    with Registries() as seeding:
        seed(seeding, registry.host, images)
    with Registries() as registries:
        client = registries.client(registry.host)
        lister = RegistryLister(client, registry.host, page_size=50, concurrency=8)
        listing = lister.listing(allows=lambda _r, tag: tag != "t2")
        assert listing.complete
        assert listing.repositories == 120  # three catalog pages of 50
        assert set(listing.entries) == {
            TagEntry(r, t, manifest_digest(v)) for r, t, v in images if t != "t2"
        }
        assert len(listing.entries) == 240
        assert client.requests == 3 + 120 + 240  # catalog pages, tags/list, one HEAD per tag
        assert list(lister.list_tags("r/app007")) == [
            TagEntry("r/app007", f"t{k}", manifest_digest(70 + k)) for k in range(3)
        ]
        assert list(lister.list_tags("no/such")) == []


def test_a_listing_that_pages_past_the_bound_is_reported_not_followed_forever(
    acr: tuple[AcrListingDouble, RegistryLister, list[float]],
) -> None:
    double, lister, _slept = acr
    lister.max_pages = 2  # the catalog needs 3 pages of 100
    listing = lister.listing()
    assert listing.failed == frozenset({""})
    assert "over 2 pages" in listing.errors[0]
    assert len(double.requests) == 2
