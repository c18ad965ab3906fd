"""The role table: ids and actions as Microsoft publishes them, ARM's matching rules, and
the grant matrix per configuration (what infra/ assigns, what the doubles enforce)."""

from __future__ import annotations

import pytest

from replicator.adapters.acr import roles
from replicator.adapters.acr.roles import (
    CATALOG_READ,
    CONTENT_READ,
    CONTENT_WRITE,
    IMPORT_ACTION,
    PULL,
    PUSH,
    REGISTRY_READ,
    Permission,
    grants,
    role,
    source_grants,
    source_owner_grants,
    target_grants,
)

# Ids from the built-in roles page (MicrosoftDocs built-in-roles/containers.md, general.md).
PUBLISHED_IDS = {
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "AcrDelete": "c2f4ef07-c644-48eb-af81-4b1b4947fb11",
    "Container Registry Data Importer and Data Reader": "577a9874-89fd-4f24-9dbd-b5034d0ad23a",
    "Container Registry Repository Reader": "b93aa761-3e63-49ed-ac28-beffa264f7ac",
    "Container Registry Repository Writer": "2a1e307c-b015-4ebd-883e-5b7698a07328",
    "Container Registry Repository Contributor": "2efddaa5-3f1f-4df3-97df-af3f13818f4c",
    "Container Registry Repository Catalog Lister": "bfdb9389-c9a5-478a-bb2f-ba9ca092c3c7",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
}


@pytest.mark.parametrize(("name", "role_id"), PUBLISHED_IDS.items(), ids=list(PUBLISHED_IDS))
def test_role_ids_are_the_published_ones(name: str, role_id: str) -> None:
    assert role(name).id == role_id
    assert role(role_id).name == name


def test_acr_pull_is_an_action_with_no_data_actions_as_published() -> None:
    pull = role("AcrPull")
    assert pull.actions == (PULL,)
    assert pull.data_actions == ()


def test_the_importer_role_reads_the_registry_and_imports_but_never_pushes() -> None:
    importer = role("Container Registry Data Importer and Data Reader")
    assert importer.allows(IMPORT_ACTION) and importer.allows(REGISTRY_READ)
    assert importer.allows(PULL) and not importer.allows(PUSH)
    assert importer.allows_data(CONTENT_READ) and importer.allows_data(CATALOG_READ)
    assert not importer.allows_data(CONTENT_WRITE)


def test_acr_pull_cannot_read_the_registry_which_import_needs_on_its_source() -> None:
    """Azure/acr#237: AcrPull on the source gives LinkedAuthorizationFailed ('read')."""
    assert not role("AcrPull").allows(REGISTRY_READ)
    assert role("Reader").allows(REGISTRY_READ)


def test_repository_roles_are_data_actions_only() -> None:
    for key in ("repositoryReader", "repositoryWriter", "repositoryContributor", "catalogLister"):
        assert role(key).actions == ()
    assert role("repositoryWriter").allows_data(CONTENT_WRITE)
    assert not role("repositoryReader").allows_data(CONTENT_WRITE)
    assert not role("repositoryContributor").allows_data(CATALOG_READ)


@pytest.mark.parametrize(
    ("pattern", "action", "allowed"),
    [
        ("*/read", REGISTRY_READ, True),
        ("*/read", PUSH, False),
        ("*", IMPORT_ACTION, True),
        ("microsoft.containerregistry/registries/pull/read", PULL, True),
        ("Microsoft.ContainerRegistry/registries/*", PUSH, True),
        ("Microsoft.ContainerRegistry/registries/pull/read", REGISTRY_READ, False),
    ],
    ids=["star-read", "star-read-not-write", "star", "case", "prefix", "no-prefix-match"],
)
def test_actions_match_as_arm_matches_them(pattern: str, action: str, allowed: bool) -> None:
    assert Permission(actions=(pattern,)).allows(action) is allowed


def test_not_actions_take_away() -> None:
    permission = Permission(actions=("*",), not_actions=("*/importImage/action",))
    assert permission.allows(PUSH) and not permission.allows(IMPORT_ACTION)


def names(granted: tuple[roles.Role, ...]) -> list[str]:
    return sorted(r.key for r in granted)


@pytest.mark.parametrize(
    ("strategy", "delete_policy", "abac", "expected"),
    [
        ("auto", "keep", False, ["acrPush", "importer"]),
        ("import", "keep", False, ["importer"]),
        ("copy", "keep", False, ["acrPush"]),
        ("auto", "propagate", False, ["acrDelete", "acrPush", "importer"]),
        ("import", "propagate-after:7d", False, ["acrDelete", "importer"]),
        ("copy", "propagate", False, ["acrDelete", "acrPush"]),
        ("auto", "keep", True, ["catalogLister", "importer", "repositoryWriter"]),
        ("import", "keep", True, ["catalogLister", "importer"]),
        ("copy", "propagate", True, ["catalogLister", "repositoryContributor", "repositoryWriter"]),
    ],
    ids=lambda v: str(v),
)
def test_target_grants(strategy: str, delete_policy: str, abac: bool, expected: list[str]) -> None:
    assert names(target_grants(strategy=strategy, delete_policy=delete_policy, abac=abac)) == (
        expected
    )
    assert grants("target", strategy=strategy, delete_policy=delete_policy, abac=abac) == (
        target_grants(strategy=strategy, delete_policy=delete_policy, abac=abac)
    )


def test_an_import_target_gets_no_push_in_either_mode() -> None:
    for abac in (False, True):
        held = target_grants(strategy="import", delete_policy="keep", abac=abac)
        assert not roles.permits(held, "push", abac=abac)
        assert roles.any_allows(held, IMPORT_ACTION)


@pytest.mark.parametrize(
    ("strategies", "abac", "expected"),
    [
        (["auto"], False, ["acrPull", "importer"]),
        (["import"], False, ["importer"]),
        (["copy"], False, ["acrPull"]),
        (["import", "copy"], False, ["acrPull", "importer"]),
        (["auto"], True, ["catalogLister", "importer", "repositoryReader"]),
        (["copy"], True, ["catalogLister", "repositoryReader"]),
    ],
    ids=lambda v: str(v),
)
def test_source_grants(strategies: list[str], abac: bool, expected: list[str]) -> None:
    assert names(source_grants(strategies, abac=abac)) == expected


def test_importing_targets_give_the_source_read_for_the_linked_scope_check() -> None:
    for abac in (False, True):
        held = source_grants(["import"], abac=abac)
        assert roles.any_allows(held, REGISTRY_READ)


def test_across_tenants_infra_grants_nothing_on_the_source() -> None:
    assert (
        grants("source", strategy="auto", delete_policy="keep", abac=False, cross_tenant=True) == ()
    )
    assert names(source_owner_grants(abac=False)) == ["acrPull"]
    assert names(source_owner_grants(abac=True)) == ["catalogLister", "repositoryReader"]


@pytest.mark.parametrize(
    ("key", "abac", "pull", "push", "catalog"),
    [
        ("acrPull", False, True, False, True),
        ("acrPull", True, False, False, False),
        ("acrPush", False, True, True, True),
        ("importer", False, True, False, True),
        ("importer", True, True, False, True),
        ("repositoryReader", True, True, False, False),
        ("repositoryReader", False, False, False, False),
        ("repositoryWriter", True, True, True, False),
        ("catalogLister", True, False, False, True),
        ("reader", False, True, False, True),
    ],
    ids=lambda v: str(v),
)
def test_data_plane_permits_by_mode(
    key: str, abac: bool, pull: bool, push: bool, catalog: bool
) -> None:
    held = [role(key)]
    assert roles.permits(held, "pull", abac=abac) is pull
    assert roles.permits(held, "push", abac=abac) is push
    assert roles.permits(held, "catalog", abac=abac) is catalog


def test_an_unknown_role_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        role("Owner of everything")
