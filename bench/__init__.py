"""Benchmarks against peers. ``python -m bench NAME`` runs ``bench/NAME_bench.py``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from devstack.localstack import Registry

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the ``## name`` section of RESULTS.md, leaving the others."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = f"## {name}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)


def publish(name: str, lines: list[str], notes: str, *, write: bool) -> None:
    """Print a benchmark's result; with ``write``, it and ``notes`` become ``## name``."""
    text = "\n".join(lines)
    print(text)
    if write:
        write_section(name, text + "\n\n" + notes)


def registry_cpu(registry: Registry) -> float:
    """User + system CPU time the registry's process has used so far."""
    fields = Path(f"/proc/{registry.service.process.pid}/stat").read_text().rsplit(")", 1)[1]
    utime, stime = fields.split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")
