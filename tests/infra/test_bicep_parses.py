"""Every Bicep file parses with a real Bicep grammar (tree-sitter-bicep): the compiler
cannot be installed here, so this is the syntax check the templates get."""

from __future__ import annotations

import pytest

from tests.infra.bicep_tree import INFRA, all_files, load, parse, problems


def test_there_are_templates_to_check() -> None:
    assert {"main.bicep", "eventgrid.bicep"} <= set(all_files())
    assert len(all_files()) >= 8


@pytest.mark.parametrize("relative", all_files())
def test_parses_without_error_or_missing_nodes(relative: str) -> None:
    root = load(relative).root
    assert root.type == "infrastructure"
    assert problems(root) == [], f"{INFRA / relative}"


@pytest.mark.parametrize(
    "broken",
    [
        b"resource s 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n",
        b"param location string =\n",
        b"var x = [for r in rules: {\n  name: r.name\n]\n",
        b"output X string = concat('a', \n",
    ],
    ids=["unclosed-object", "missing-default", "unbalanced-loop", "unclosed-call"],
)
def test_the_check_catches_broken_bicep(broken: bytes) -> None:
    assert problems(parse(broken)) != []
