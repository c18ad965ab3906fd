"""The dev stack, the benchmarks and the tests import each other by their package paths:
``bench/`` and ``devstack/`` take nothing from ``tests/``, nothing edits ``sys.path`` to
reach a module, and every test folder is a package (so a module has one name, the one
mypy checks it under: ``tests.doubles.arm``, not also ``doubles.arm``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _edits_sys_path(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            return True
    return False


def test_bench_and_the_dev_stack_take_nothing_from_the_tests() -> None:
    test_modules = {"tests"} | {p.name for p in (ROOT / "tests").iterdir() if p.is_dir()}
    for path in _sources("bench") + _sources("devstack"):
        reached = _imported(path) & test_modules
        assert not reached, f"{path.relative_to(ROOT)} imports {sorted(reached)}"


def test_nothing_reaches_a_module_through_sys_path() -> None:
    for path in _sources("bench") + _sources("devstack") + _sources("tests"):
        assert not _edits_sys_path(path), path.relative_to(ROOT)


def test_every_test_folder_is_a_package() -> None:
    folders = {p.parent for p in _sources("tests") if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert missing == []
