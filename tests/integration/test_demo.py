"""`make demo` runs `acr-replicator demo`: the whole flow, exit 0 only if the copy is identical."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_replicates_byte_identically() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "replicator", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "the DR copy is byte-identical." in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("demo/hello"))
    assert "copied" in row.split()
