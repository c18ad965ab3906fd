"""Tables in docs/ against what they describe: docs/azure-facts.md names tests that exist,
and the roles tables of docs/deploy.md and the README match replicator/acr/roles.json."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
from bicep_tree import ROOT

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
