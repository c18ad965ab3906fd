"""What the identity's roles on a registry mean, by the role table: the roles that the
registry's role-assignment mode needs (what infra/ grants), whether the caller's permissions
(ARM's permissions answer) give what they give, and the source side of import. Pure.

On ABAC registries (``roleAssignmentMode: AbacRepositoryPermissions``) AcrPull, AcrPush and
AcrDelete grant nothing and the Repository roles do; on the others it is the reverse, so
roles held from the other mode are named: the registry was deployed with the wrong mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from replicator.adapters.acr import roles
from replicator.adapters.acr.errors import IMPORT_ROLE
from replicator.app.doctor.verdicts import ArmFacts, Check, CheckStatus

if TYPE_CHECKING:
    from replicator.adapters.acr.arm import RegistryProperties
    from replicator.adapters.acr.roles import Permission

LEGACY_ROLES = ("acrPull", "acrPush", "acrDelete")  # nothing on an ABAC registry
ABAC_ROLES = ("repositoryReader", "repositoryWriter", "repositoryContributor", "catalogLister")


@dataclass(frozen=True)
class Need:
    """One thing the identity must be able to do on a registry, and on which path."""

    what: str  # pull | push | delete | catalog | import | read
    path: str  # always | import | copy | delete
    severity: CheckStatus  # fail | warn: what a missing one means for the configuration


def can(permissions: tuple[Permission, ...], what: str, *, abac: bool) -> bool:
    if what == "import":
        return roles.any_allows(permissions, roles.IMPORT_ACTION)
    if what == "read":
        return roles.any_allows(permissions, roles.REGISTRY_READ)
    operation: roles.Operation = what  # type: ignore[assignment]
    return roles.permits(permissions, operation, abac=abac)


def held_roles(permissions: tuple[Permission, ...]) -> tuple[roles.Role, ...]:
    """The table's roles whose definition is one of the permission entries (by name)."""
    blocks = set(permissions)
    return tuple(r for r in roles.all_roles() if roles.as_permission(r) in blocks)


def _mode_text(props: RegistryProperties | None) -> tuple[bool, str]:
    if props is None:
        return False, "role-assignment mode unknown (the registry could not be read), as rbac"
    name = "abac" if props.abac else "rbac"
    return props.abac, f"role-assignment mode {name} ({props.role_assignment_mode})"


def role_check(
    host: str,
    resource_id: str | None,
    facts: ArmFacts,
    granted: tuple[roles.Role, ...],
    needs: list[Need],
    *,
    side: str,
) -> Check:
    """Which roles the registry's mode needs (what infra/ grants) and whether the caller
    has what they give; flags roles of the other mode, which do nothing there."""
    abac, mode = _mode_text(facts.properties)
    names = ", ".join(r.name for r in granted) or "none"
    if facts.permissions is None:
        return Check(
            host,
            "roles",
            CheckStatus.WARN,
            f"{mode}: needs {names}; could not read the "
            "identity's permissions (Microsoft.Authorization/permissions)",
        )
    missing = [n for n in needs if not can(facts.permissions, n.what, abac=abac)]
    held = held_roles(facts.permissions)
    wrong = [r for r in held if r.key in (LEGACY_ROLES if abac else ABAC_ROLES)]
    flag = ""
    if wrong and missing:
        other = "rbac" if abac else "abac"
        flag = (
            f"; {', '.join(r.name for r in wrong)} grant nothing on this registry: it was "
            f"deployed as {other} (set {side}RoleAssignmentMode={'abac' if abac else 'rbac'})"
        )
    if not missing:
        return Check(host, "roles", CheckStatus.PASS, f"{mode}: needs {names}; all held")
    status = (
        CheckStatus.FAIL
        if any(n.severity == CheckStatus.FAIL for n in missing)
        else CheckStatus.WARN
    )
    lacking = ", ".join(f"{n.what} ({n.path})" for n in missing)
    fix = _grant_fix(resource_id, granted, missing, abac)
    return Check(host, "roles", status, f"{mode}: needs {names}; missing {lacking}{flag}", fix)


def _grant_fix(
    resource_id: str | None, granted: tuple[roles.Role, ...], missing: list[Need], abac: bool
) -> str:
    wanted: list[str] = []
    for need in missing:
        for role in granted:
            if can((roles.as_permission(role),), need.what, abac=abac) and role.name not in wanted:
                wanted.append(role.name)
                break
    scope = resource_id or "<registry id>"
    return "; ".join(
        f"az role assignment create --assignee <identity principal id> --role '{name}' "
        f"--scope {scope}"
        for name in wanted
    )


def source_import_check(host: str, facts: ArmFacts, *, fails: bool) -> Check:
    """The source side of import by resource id: ``read`` for ARM's linked-scope check
    (else 403 LinkedAuthorizationFailed) and pull for the copy ARM makes."""
    abac, _ = _mode_text(facts.properties)
    if facts.permissions is None:
        return Check(
            host, "import-source", CheckStatus.WARN, "could not read the identity's permissions"
        )
    read = can(facts.permissions, "read", abac=abac)
    pull = can(facts.permissions, "pull", abac=abac)
    if read and pull:
        return Check(
            host, "import-source", CheckStatus.PASS, "read and pull on the source: import works"
        )
    lacking = " and ".join(w for w, ok in (("read", read), ("pull", pull)) if not ok)
    detail = (
        f"no {lacking} on the source: import by resource id is refused "
        "(LinkedAuthorizationFailed); AcrPull alone is not enough"
    )
    if not fails:
        detail += ", so auto copies over the data plane"
    fix = (
        f"az role assignment create --assignee <identity principal id> --role '{IMPORT_ROLE}' "
        "--scope <source registry id>"
    )
    return Check(
        host, "import-source", CheckStatus.FAIL if fails else CheckStatus.WARN, detail, fix
    )
