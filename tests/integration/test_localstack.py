"""The local stack's failure modes say what to do, in one line, and leave nothing running."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.localstack import LocalStack, find_registry_binary
from replicator.domain.errors import StackError

ROOT = Path(__file__).resolve().parents[2]


def test_missing_registry_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="apt-get install docker-registry"):
        find_registry_binary()


def test_demo_without_a_registry_exits_2_with_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "replicator", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "make install" in lines[0]
    assert "Traceback" not in out.stderr


def test_a_taken_port_is_reported_and_the_stack_stops_cleanly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with LocalStack() as stack:
            with pytest.raises(StackError, match="port taken"):
                stack.start_registry(port=port)
            process = stack.services[-1].process
        assert process.poll() is not None  # nothing left running after the stack closed


def test_services_stop_even_after_a_failure() -> None:
    started: list[subprocess.Popen[bytes]] = []

    def failing_test() -> None:
        with LocalStack() as stack:
            started.append(stack.start_registry().service.process)
            raise RuntimeError("a failing test")

    with pytest.raises(RuntimeError):
        failing_test()
    assert started[0].poll() is not None
