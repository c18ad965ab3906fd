"""``acr-replicator copy`` end to end against real registries."""

from __future__ import annotations

import io
import json
import sys

import pytest

from devstack.localstack import Registry
from devstack.testimages import push_test_image
from replicator.adapters.oci.registries import Registries
from replicator.cli import main
from replicator.domain.reference import ImageRef


def test_copy_command(
    registry_pair: tuple[Registry, Registry], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = registry_pair
    with Registries() as registries:
        pushed = push_test_image(registries, ImageRef(source.host, "team/app", "v1"))

    assert main(["copy", f"{source.host}/team/app:v1", f"{target.host}/dr/app"]) == 0
    assert pushed.digest in capsys.readouterr().out

    assert main(["copy", "--json", f"{source.host}/team/app:v1", f"{target.host}/dr/app:v1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["already_present"] is True
    assert report["digest"] == pushed.digest
    with Registries() as registries:
        found = registries.client(target.host).head_manifest(ImageRef(target.host, "dr/app", "v1"))
    assert found is not None
    assert found.digest == pushed.digest


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["copy", "not a reference", "127.0.0.1:1/x:y"], 2, "invalid"),
        (["copy", "127.0.0.1:1/UPPER:v1", "127.0.0.1:1/x:y"], 2, "invalid repository"),
        (
            ["copy", "127.0.0.1:1/a@sha256:" + "a" * 64, "127.0.0.1:1/b@sha256:" + "b" * 64],
            2,
            "digest",
        ),
    ],
    ids=["garbage", "uppercase", "digest-conflict"],
)
def test_bad_usage_exits_2(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_missing_source_exits_1(
    registry_pair: tuple[Registry, Registry], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = registry_pair
    assert main(["copy", f"{source.host}/team/none:v1", f"{target.host}/team/none:v1"]) == 1
    err = capsys.readouterr().err
    assert "404" in err
    assert len(err.strip().splitlines()) == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_copy_shows_progress_on_a_terminal_only_without_json_or_no_progress(
    registry_pair: tuple[Registry, Registry],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, target = registry_pair
    with Registries() as registries:
        push_test_image(registries, ImageRef(source.host, "team/app", "v1"))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for quiet in (["--json"], ["--no-progress"]):
        dst = f"{target.host}/quiet{len(quiet[0])}/app"
        assert main(["copy", *quiet, f"{source.host}/team/app:v1", dst]) == 0
        assert terminal.getvalue() == ""
    assert main(["copy", f"{source.host}/team/app:v1", f"{target.host}/dr/app"]) == 0
    drawn = terminal.getvalue()
    last = drawn.rstrip("\n").rsplit("\r", 1)[1]
    assert drawn.endswith("\n")
    assert last.startswith("[" + "#" * 20 + "]") and " blobs" in last
    assert "copied" in capsys.readouterr().out
