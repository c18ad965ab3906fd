"""infra/ grants the registry roles from the role table only: it loads
replicator/adapters/acr/roles.json with loadJsonContent, indexes its grant matrix by strategy,
delete policy and role-assignment mode, and writes no role id or role name itself."""

from __future__ import annotations

import json
import re

import pytest

from replicator.adapters.acr import roles
from tests.infra.bicep_tree import INFRA, ROOT, load, string_value, text, walk

TABLE = ROOT / "replicator" / "adapters" / "acr" / "roles.json"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
REGISTRY_FILES = ["main.bicep", "modules/registry-roles.bicep", "eventgrid.bicep"]
TABLE_READERS = ["main.bicep", "modules/registry-roles.bicep"]


@pytest.mark.parametrize("relative", REGISTRY_FILES)
def test_no_role_id_or_role_name_is_written_in_bicep(relative: str) -> None:
    source = text(load(relative).root)
    assert not GUID.search(source), f"{relative}: a literal GUID; index the role table instead"
    literals = {v for n in walk(load(relative).root) if (v := string_value(n)) is not None}
    for role in roles.all_roles():
        assert role.key not in literals, f"{relative}: role key {role.key!r} written out"
        assert role.name not in literals, f"{relative}: role name {role.name!r} written out"


@pytest.mark.parametrize("relative", TABLE_READERS)
def test_the_table_is_loaded_with_load_json_content(relative: str) -> None:
    source = text(load(relative).root)
    (path,) = re.findall(r"loadJsonContent\('([^']+roles\.json)'\)", source)
    assert (INFRA / relative).parent.joinpath(path).resolve() == TABLE


def test_role_ids_come_from_the_table() -> None:
    module = text(load("modules/registry-roles.bicep").root)
    assert "map(roleKeys, key => roleTable.roles[key].id)" in module
    assert "roleDefinitions', roleId)" in module


def test_main_indexes_every_branch_of_the_matrix() -> None:
    source = text(load("main.bicep").root)
    matrix = json.loads(TABLE.read_text())["matrix"]
    assert "grantMatrix.source[sourceRoleAssignmentMode]" in source
    assert "grantMatrix.strategies[target.?strategy ?? 'auto']" in source
    for branch in matrix["source"]["rbac"]:
        assert f"sourceGrants['{branch}']" in source, branch
    for branch in matrix["target"]["rbac"]:
        assert f"target.grants['{branch}']" in source, branch
    for path in ("import", "copy"):
        assert f"contains(target.paths, '{path}')" in source
        assert f"contains(targetPaths, '{path}')" in source
    assert "deletesPropagate ? target.grants['delete'] : []" in source
    assert "roleKeys: targetRoleKeys[i]" in source and "roleKeys: sourceRoleKeys" in source


def test_the_matrix_has_the_branches_main_selects() -> None:
    matrix = json.loads(TABLE.read_text())["matrix"]
    paths = {p for listed in matrix["strategies"].values() for p in listed}
    assert paths == {"import", "copy"}
    for side, branches in (("source", {"always", "import", "copy"}), ("target", None)):
        for mode in ("rbac", "abac"):
            expected = branches or {"always", "import", "copy", "delete"}
            assert set(matrix[side][mode]) == expected, (side, mode)


def test_the_role_assignment_mode_is_a_parameter_per_registry() -> None:
    main = load("main.bicep")
    params = main.declarations("parameter")
    matrix = json.loads(TABLE.read_text())["matrix"]
    source = text(main.root)
    for name in ("sourceRoleAssignmentMode", "targetRoleAssignmentMode"):
        (listed,) = re.findall(rf"@allowed\(\[([^\]]*)\]\)\nparam {name} ", source)
        allowed = set(re.findall(r"'(\w+)'", listed))
        assert allowed == set(matrix["target"]) == set(matrix["source"]), name
        assert text(params[name]).endswith("= 'rbac'")
    assert "targetRoleAssignmentModes" in params  # per target, by its ARM id
    assert "targetRoleAssignmentModes[?target.?resource_id ?? '']" in text(main.root)
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert "sourceRoleAssignmentMode" in given and "targetRoleAssignmentMode" in given


def test_across_tenants_nothing_is_granted_on_the_source() -> None:
    source_roles = load("main.bicep").declarations("module")["sourceRoles"]
    assert "if (!crossTenant)" in text(source_roles)
