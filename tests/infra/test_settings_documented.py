"""Every app setting the code reads is documented where an operator looks: the README's
configuration table and local.settings.sample.json (value and help), and is wired in the
deployment (tests/infra/test_structure.py checks the Bicep side)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _read_by_the_code() -> set[str]:
    names: set[str] = set()
    for module in (ROOT / "replicator").rglob("*.py"):
        names |= set(
            re.findall(r"""env\.get\(\s*["'](REPLICATOR_[A-Z_]+)["']""", module.read_text())
        )
    return names


def test_the_code_reads_settings_at_all() -> None:
    assert {"REPLICATOR_SOURCE", "REPLICATOR_RATE_LIMITS", "REPLICATOR_VERIFY_SWEEP"} <= (
        _read_by_the_code()
    )


def test_every_setting_is_in_the_readme_table() -> None:
    rows = {
        name
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `REPLICATOR_")
        for name in re.findall(r"`(REPLICATOR_[A-Z_]+)`", line.split("|")[1])
    }
    missing = _read_by_the_code() - rows
    assert not missing, f"README's configuration table lacks {sorted(missing)}"


def test_every_setting_is_in_the_sample_with_its_help() -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for name in _read_by_the_code():
        assert name in values, name
        assert values.get(f"_help_{name}"), f"_help_{name}"
