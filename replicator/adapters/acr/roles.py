"""The role table (``roles.json``): the built-in roles the replicator relies on, with the
actions and data actions Microsoft publishes for them, and the grant matrix that says which
of them ``infra/`` assigns on each registry.

One table, three readers: ``infra/`` loads the JSON with ``loadJsonContent``, doctor checks
a caller's permissions against it, and the test doubles (ARM, the registry token service)
decide with these functions what a principal may do. Pure: stdlib only.

Matching follows ARM's rules for role definitions: action strings compare without regard
to case, ``*`` stands for any run of characters (``*/read`` covers every read action), and
``notActions`` / ``notDataActions`` take away from what their permission grants.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol

IMPORT_ACTION = "Microsoft.ContainerRegistry/registries/importImage/action"
REGISTRY_READ = "Microsoft.ContainerRegistry/registries/read"
PULL = "Microsoft.ContainerRegistry/registries/pull/read"
PUSH = "Microsoft.ContainerRegistry/registries/push/write"
ARTIFACT_DELETE = "Microsoft.ContainerRegistry/registries/artifacts/delete"
# Data actions, honoured on ABAC registries (roleAssignmentMode AbacRepositoryPermissions).
CONTENT_READ = "Microsoft.ContainerRegistry/registries/repositories/content/read"
CONTENT_WRITE = "Microsoft.ContainerRegistry/registries/repositories/content/write"
CONTENT_DELETE = "Microsoft.ContainerRegistry/registries/repositories/content/delete"
METADATA_READ = "Microsoft.ContainerRegistry/registries/repositories/metadata/read"
METADATA_WRITE = "Microsoft.ContainerRegistry/registries/repositories/metadata/write"
METADATA_DELETE = "Microsoft.ContainerRegistry/registries/repositories/metadata/delete"
CATALOG_READ = "Microsoft.ContainerRegistry/registries/catalog/read"

ABAC_MODE = "AbacRepositoryPermissions"  # properties.roleAssignmentMode of an ABAC registry

Side = Literal["source", "target"]
Operation = Literal["pull", "push", "delete", "catalog"]

# What a registry token scope needs, by the registry's role-assignment mode.
_RBAC_NEEDS: dict[str, str] = {
    "pull": PULL,
    "push": PUSH,
    "delete": ARTIFACT_DELETE,
    "catalog": PULL,
}
_ABAC_NEEDS: dict[str, str] = {
    "pull": CONTENT_READ,
    "push": CONTENT_WRITE,
    "delete": CONTENT_DELETE,
    "catalog": CATALOG_READ,
}


class Grant(Protocol):
    """A role or one permission of ARM's permissions answer: what it allows."""

    def allows(self, action: str) -> bool: ...
    def allows_data(self, data_action: str) -> bool: ...


def _matches(pattern: str, action: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, action, flags=re.IGNORECASE) is not None


def _granted(allowed: Iterable[str], denied: Iterable[str], action: str) -> bool:
    return any(_matches(p, action) for p in allowed) and not any(
        _matches(p, action) for p in denied
    )


@dataclass(frozen=True)
class Role:
    key: str
    name: str
    id: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...]

    def allows(self, action: str) -> bool:
        """Whether this role grants the control-plane ``action``."""
        return _granted(self.actions, self.not_actions, action)

    def allows_data(self, data_action: str) -> bool:
        """Whether this role grants the data action ``data_action``."""
        return _granted(self.data_actions, self.not_data_actions, data_action)

    @property
    def definition_id(self) -> str:
        return f"/providers/Microsoft.Authorization/roleDefinitions/{self.id}"


@cache
def table() -> dict[str, Any]:
    """The parsed ``roles.json``."""
    text = resources.files("replicator.adapters.acr").joinpath("roles.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _roles() -> dict[str, Role]:
    return {
        key: Role(
            key=key,
            name=entry["name"],
            id=entry["id"],
            actions=tuple(entry["actions"]),
            not_actions=tuple(entry["notActions"]),
            data_actions=tuple(entry["dataActions"]),
            not_data_actions=tuple(entry["notDataActions"]),
        )
        for key, entry in table()["roles"].items()
    }


def all_roles() -> tuple[Role, ...]:
    return tuple(_roles().values())


def role(key_or_name: str) -> Role:
    """A role by its key in the table (``acrPull``), its name (``AcrPull``) or its id."""
    roles = _roles()
    if key_or_name in roles:
        return roles[key_or_name]
    wanted = key_or_name.lower().rsplit("/", 1)[-1]
    for candidate in roles.values():
        if wanted in (candidate.name.lower(), candidate.id):
            return candidate
    raise KeyError(f"no role {key_or_name!r} in roles.json")


def _mode(abac: bool) -> str:
    return "abac" if abac else "rbac"


def _unique(keys: Iterable[str]) -> tuple[Role, ...]:
    seen: dict[str, Role] = {}
    for key in keys:
        seen.setdefault(key, role(key))
    return tuple(seen.values())


def strategy_paths(strategy: str) -> tuple[str, ...]:
    """The paths a strategy may take: ``auto`` -> ``("import", "copy")``."""
    paths: list[str] = table()["matrix"]["strategies"][strategy]
    return tuple(paths)


def grants(
    side: Side,
    *,
    strategy: str,
    delete_policy: str,
    abac: bool,
    cross_tenant: bool = False,
) -> tuple[Role, ...]:
    """What ``infra/`` grants the replicator's identity on one registry for one target's
    configuration. Across tenants that is nothing on the source (its owner grants
    :func:`source_owner_grants` to the federated app instead)."""
    return (
        source_grants([strategy], abac=abac, cross_tenant=cross_tenant)
        if side == "source"
        else (target_grants(strategy=strategy, delete_policy=delete_policy, abac=abac))
    )


def source_grants(
    strategies: Iterable[str], *, abac: bool, cross_tenant: bool = False
) -> tuple[Role, ...]:
    """What ``infra/`` grants on the source for targets with these strategies."""
    if cross_tenant:
        return ()
    branch = table()["matrix"]["source"][_mode(abac)]
    keys = list(branch["always"])
    for strategy in strategies:
        for path in strategy_paths(strategy):
            keys.extend(branch[path])
    return _unique(keys)


def target_grants(*, strategy: str, delete_policy: str, abac: bool) -> tuple[Role, ...]:
    """What ``infra/`` grants on one target."""
    branch = table()["matrix"]["target"][_mode(abac)]
    keys = list(branch["always"])
    for path in strategy_paths(strategy):
        keys.extend(branch[path])
    if deletes_propagate(delete_policy):
        keys.extend(branch["delete"])
    return _unique(keys)


def source_owner_grants(*, abac: bool) -> tuple[Role, ...]:
    """Across tenants: what the source's owner grants the federated app (docs/deploy.md)."""
    return _unique(table()["matrix"]["crossTenantSource"][_mode(abac)])


def deletes_propagate(delete_policy: str) -> bool:
    return delete_policy.strip().lower() != "keep"


def any_allows(roles: Iterable[Grant], action: str) -> bool:
    return any(r.allows(action) for r in roles)


def any_allows_data(roles: Iterable[Grant], data_action: str) -> bool:
    return any(r.allows_data(data_action) for r in roles)


def needed_for(operation: Operation, *, abac: bool) -> str:
    """The (data) action a registry token scope needs: an action on RBAC registries, a data
    action on ABAC ones (where AcrPull, AcrPush and AcrDelete grant nothing)."""
    return (_ABAC_NEEDS if abac else _RBAC_NEEDS)[operation]


def permits(roles: Iterable[Grant], operation: Operation, *, abac: bool) -> bool:
    """Whether roles held on a registry allow a data-plane ``operation`` there."""
    needed = needed_for(operation, abac=abac)
    held = tuple(roles)
    return any_allows_data(held, needed) if abac else any_allows(held, needed)


@dataclass(frozen=True)
class Permission:
    """One entry of ARM's permissions API answer (``GET {scope}/providers/
    Microsoft.Authorization/permissions``)."""

    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Permission:
        def strings(name: str) -> tuple[str, ...]:
            value = entry.get(name) or []
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        return cls(
            strings("actions"),
            strings("notActions"),
            strings("dataActions"),
            strings("notDataActions"),
        )

    def allows(self, action: str) -> bool:
        return _granted(self.actions, self.not_actions, action)

    def allows_data(self, data_action: str) -> bool:
        return _granted(self.data_actions, self.not_data_actions, data_action)


def as_permission(r: Role) -> Permission:
    return Permission(r.actions, r.not_actions, r.data_actions, r.not_data_actions)


def markdown_table() -> str:
    """The grant matrix as the markdown table docs/deploy.md shows (a test compares)."""
    matrix = table()["matrix"]
    why = matrix["why"]

    def cell(keys: list[str]) -> str:
        return ", ".join(f"{role(k).name} `{role(k).id[:8]}…`" for k in keys) or "none"

    rows = ["| Registry | When | Role on an RBAC registry | Role on an ABAC registry | Why |"]
    rows.append("|---|---|---|---|---|")
    for side in ("source", "target"):
        for branch, (when, reason) in why[side].items():
            rbac, abac = matrix[side]["rbac"][branch], matrix[side]["abac"][branch]
            rows.append(f"| {side} | {when} | {cell(rbac)} | {cell(abac)} | {reason} |")
    owner = matrix["crossTenantSource"]
    when, reason = why["crossTenantSource"]
    rows.append(f"| source | {when} | {cell(owner['rbac'])} | {cell(owner['abac'])} | {reason} |")
    return "\n".join(rows) + "\n"
