"""A small reader for Bicep files over the tree-sitter-bicep grammar (no compiler here)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
_PARSER = Parser(Language(tree_sitter_bicep.language()))


def parse(source: bytes) -> Node:
    return _PARSER.parse(source).root_node


def problems(root: Node) -> list[str]:
    """Every ERROR and MISSING node, as ``line:col type``."""
    found: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, col = node.start_point
            kind = "MISSING" if node.is_missing else "ERROR"
            found.append(f"{row + 1}:{col + 1} {kind} {text(node)[:60]!r}")
        stack.extend(node.children)
    return found


def text(node: Node) -> str:
    return (node.text or b"").decode()


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def string_value(node: Node) -> str | None:
    """The value of a plain string literal (no interpolation), else None."""
    if node.type != "string":
        return None
    parts = [c for c in node.named_children]
    if any(c.type != "string_content" for c in parts):
        return None
    return "".join(text(c) for c in parts)


@dataclass(frozen=True)
class BicepFile:
    path: Path
    root: Node

    def declarations(self, kind: str) -> dict[str, Node]:
        """``param``/``var``/``output``/``resource``/``module`` declarations by name."""
        found: dict[str, Node] = {}
        for node in self.root.named_children:
            if node.type == f"{kind}_declaration":
                name = next(c for c in node.named_children if c.type == "identifier")
                found[text(name)] = node
        return found

    def params(self) -> dict[str, bool]:
        """Parameter name -> whether it has a default."""
        found: dict[str, bool] = {}
        for name, node in self.declarations("parameter").items():
            kids = [
                c for c in node.named_children if c.type not in {"identifier", "type", "decorators"}
            ]
            found[name] = bool(kids)
        return found

    def variable_strings(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for name, node in self.declarations("variable").items():
            value = string_value(node.named_children[-1])
            if value is not None:
                values[name] = value
        return values

    def property_names(self) -> set[str]:
        """Every object property key anywhere in the file."""
        names: set[str] = set()
        for node in walk(self.root):
            if node.type == "object_property" and node.named_children:
                key = node.named_children[0]
                names.add(string_value(key) or text(key))
        return names

    def strings(self) -> set[str]:
        return {v for n in walk(self.root) if (v := string_value(n)) is not None}


@cache
def load(relative: str) -> BicepFile:
    path = INFRA / relative
    return BicepFile(path, parse(path.read_bytes()))


def all_files() -> list[str]:
    return sorted(str(p.relative_to(INFRA)) for p in INFRA.rglob("*.bicep"))


def object_property(obj: Node, key: str) -> Node | None:
    """The value of ``key`` directly in the object ``obj``."""
    for prop in obj.named_children:
        if prop.type == "object_property" and prop.named_children:
            name = prop.named_children[0]
            if (string_value(name) or text(name)) == key:
                return prop.named_children[-1]
    return None


def body(declaration: Node) -> Node:
    """The object a resource or module declares (through loops and conditions)."""
    for node in walk(declaration):
        if node.type == "object":
            return node
    raise AssertionError(f"no body in {text(declaration)[:80]}")


def resource_type(declaration: Node) -> str:
    return string_value(declaration.named_children[1]) or ""
