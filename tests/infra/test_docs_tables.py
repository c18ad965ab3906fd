"""Tables in docs/ against what they describe: docs/azure-facts.md names tests that exist,
docs/deploy.md's roles table is the one generated from replicator/adapters/acr/roles.json, and the
README's roles paragraph names the roles it grants."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from replicator.adapters.acr import roles
from tests.infra.bicep_tree import ROOT

FACTS = ROOT / "docs" / "azure-facts.md"
TEST_NAME = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def table_rows(path: Path, header: str) -> list[list[str]]:
    """The cells of the rows of the markdown table whose header row starts with ``header``."""
    rows: list[list[str]] = []
    inside = False
    for line in path.read_text().splitlines():
        if line.startswith(f"| {header} "):
            inside = True
            continue
        if inside and line.startswith("|---"):
            continue
        if inside and line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif inside:
            break
    return rows


@cache
def functions_in(relative: str) -> frozenset[str]:
    tree = ast.parse((ROOT / relative).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            names.add(node.name)
    return frozenset(names)


def test_every_fact_row_has_a_source_and_names_a_test() -> None:
    rows = table_rows(FACTS, "Fact")
    assert len(rows) >= 5
    for fact, source, tests in rows:
        assert fact and source, f"row without a fact or a source: {fact!r}"
        assert TEST_NAME.search(tests), f"no test named for {fact!r}"


def named_tests() -> list[tuple[str, str]]:
    return [
        (path, name)
        for _fact, _source, tests in table_rows(FACTS, "Fact")
        for path, name in TEST_NAME.findall(tests)
    ]


@pytest.mark.parametrize(("path", "name"), named_tests(), ids=lambda v: str(v))
def test_every_test_named_in_azure_facts_exists(path: str, name: str) -> None:
    assert (ROOT / path).is_file(), f"docs/azure-facts.md names {path}, which does not exist"
    assert name in functions_in(path), f"docs/azure-facts.md names {path}::{name}: no such test"


def test_the_roles_table_in_deploy_md_is_the_one_generated_from_roles_json() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    start = doc.index("<!-- roles-table:")
    start = doc.index("\n", start) + 1
    end = doc.index("<!-- /roles-table -->")
    assert doc[start:end] == roles.markdown_table(), (
        "docs/deploy.md's roles table differs from replicator/adapters/acr/roles.json; paste "
        "`python -c 'from replicator.adapters.acr import roles; print(roles.markdown_table())'`"
    )


def test_the_generated_table_names_every_granted_role_and_its_id() -> None:
    table = roles.markdown_table()
    matrix = roles.table()["matrix"]
    for side in ("source", "target"):
        assert set(matrix["why"][side]) == set(matrix[side]["rbac"]), side  # a row per branch
    for side in ("source", "target"):
        for mode in ("rbac", "abac"):
            for keys in matrix[side][mode].values():
                for key in keys:
                    assert f"{roles.role(key).name} `{roles.role(key).id[:8]}" in table


def test_the_readme_names_the_roles_granted_where_and_why() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    for key in ("importer", "acrPull", "acrPush", "acrDelete"):
        assert roles.role(key).name in readme, key
    for phrase in (
        "Repository Reader/Writer/Contributor",
        "Catalog Lister",
        "LinkedAuthorizationFailed",
        "roles.json",
        "docs/deploy.md",
    ):
        assert phrase in readme, phrase
