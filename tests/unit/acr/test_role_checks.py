"""doctor's role verdicts, pure: the caller's permissions (as ARM's permissions API answers
them: one entry per role definition) against what the registry's mode needs."""

from __future__ import annotations

import pytest

from replicator.adapters.acr import roles
from replicator.adapters.acr.arm import RegistryProperties
from replicator.app.doctor.role_checks import Need, held_roles, role_check, source_import_check
from replicator.app.doctor.verdicts import ArmFacts, CheckStatus

HOST = "contosodr.azurecr.io"
RID = (
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/contosodr"
)
RBAC = RegistryProperties("contosodr", HOST, "Premium")
ABAC = RegistryProperties("contosodr", HOST, "Premium", role_assignment_mode=roles.ABAC_MODE)
AUTO_NEEDS = [
    Need("pull", "always", CheckStatus.FAIL),
    Need("import", "import", CheckStatus.WARN),
    Need("push", "copy", CheckStatus.WARN),
]


def facts(props: RegistryProperties | None, *keys: str) -> ArmFacts:
    return ArmFacts(props, tuple(roles.as_permission(roles.role(k)) for k in keys))


def granted(abac: bool) -> tuple[roles.Role, ...]:
    return roles.target_grants(strategy="auto", delete_policy="keep", abac=abac)


@pytest.mark.parametrize(
    ("props", "keys", "status", "says"),
    [
        (RBAC, ("importer", "acrPush"), "pass", "all held"),
        (ABAC, ("catalogLister", "importer", "repositoryWriter"), "pass", "all held"),
        (RBAC, ("importer",), "warn", "missing push (copy)"),
        (ABAC, ("importer", "acrPush"), "warn", "AcrPush grant nothing on this registry"),
        (RBAC, ("repositoryWriter",), "fail", "Container Registry Repository Writer grant"),
        (None, ("importer", "acrPush"), "pass", "role-assignment mode unknown"),
    ],
    ids=["rbac-ok", "abac-ok", "no-push", "rbac-roles-on-abac", "abac-roles-on-rbac", "unread"],
)
def test_role_check(
    props: RegistryProperties | None, keys: tuple[str, ...], status: str, says: str
) -> None:
    abac = bool(props and props.abac)
    check = role_check(HOST, RID, facts(props, *keys), granted(abac), AUTO_NEEDS, side="target")
    assert check.status == status
    assert says in check.detail


def test_a_missing_role_is_named_in_the_fix_with_the_scope() -> None:
    check = role_check(HOST, RID, facts(ABAC, "importer"), granted(True), AUTO_NEEDS, side="target")
    assert check.fix == (
        "az role assignment create --assignee <identity principal id> "
        f"--role 'Container Registry Repository Writer' --scope {RID}"
    )


def test_unknown_permissions_warn() -> None:
    check = role_check(HOST, RID, ArmFacts(RBAC), granted(False), AUTO_NEEDS, side="target")
    assert check.status == "warn"
    assert "could not read the identity's permissions" in check.detail


def test_held_roles_are_recognised_by_their_published_definition() -> None:
    assert [r.key for r in held_roles(facts(RBAC, "acrPull", "reader").permissions or ())] == [
        "acrPull",
        "reader",
    ]


@pytest.mark.parametrize(
    ("keys", "fails", "status"),
    [
        (("importer",), True, "pass"),
        (("acrPull",), True, "fail"),
        (("acrPull",), False, "warn"),
        (("reader",), True, "pass"),  # */read covers read and pull on an RBAC registry
    ],
    ids=["importer", "pull-only-import", "pull-only-auto", "reader"],
)
def test_the_source_side_of_import(keys: tuple[str, ...], fails: bool, status: str) -> None:
    assert source_import_check(HOST, facts(RBAC, *keys), fails=fails).status == status
