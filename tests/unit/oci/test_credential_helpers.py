"""Docker credential helpers and stores (``credHelpers``, ``credsStore``), as the Docker CLI.

The helpers are real programs on ``PATH`` speaking the helper protocol: ``get`` with the
server on stdin, ``{"ServerURL", "Username", "Secret"}`` on stdout, non-zero when unknown.
"""

from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path

import pytest

from replicator.adapters.oci.credentials import RegistryAuth
from replicator.adapters.oci.dockerconfig import docker_config_auth, docker_config_path

HELPER = """#!/bin/sh
[ "$1" = get ] || exit 3
read -r server
echo "$server" >> "{calls}"
case "$server" in
{cases}
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


def _helper(bin_dir: Path, name: str, answers: dict[str, str]) -> Path:
    """``docker-credential-<name>``: prints ``answers[server]``; the servers asked go to a log."""
    calls = bin_dir / f"{name}.calls"
    cases = "\n".join(
        f"  '{server}') printf '%s' '{answer}' ;;" for server, answer in answers.items()
    )
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(HELPER.format(calls=calls, cases=cases))
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    return calls


def _answer(user: str, secret: str) -> str:
    return json.dumps({"ServerURL": "x", "Username": user, "Secret": secret})


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


def _config(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_cred_helpers_win_over_the_store_and_the_auths_entry(tmp_path: Path, bin_dir: Path) -> None:
    _helper(bin_dir, "acr", {"r.azurecr.io": _answer("<token>", "refresh-9")})
    store_calls = _helper(bin_dir, "desktop", {"other.io": _answer("bob", "pw")})
    path = _config(
        tmp_path,
        {
            "credHelpers": {"r.azurecr.io": "acr"},
            "credsStore": "desktop",
            "auths": {"r.azurecr.io": {"auth": base64.b64encode(b"no:no").decode()}},
        },
    )
    assert docker_config_auth("r.azurecr.io", path) == RegistryAuth.refresh_token("refresh-9")
    assert not store_calls.exists()  # the host's own helper answered; the store was not asked
    assert docker_config_auth("other.io", path) == RegistryAuth.basic("bob", "pw")


def test_az_acr_login_style_null_user_is_basic(tmp_path: Path, bin_dir: Path) -> None:
    null_user = "00000000-0000-0000-0000-000000000000"
    _helper(bin_dir, "desktop", {"r.azurecr.io": _answer(null_user, "refresh-1")})
    path = _config(tmp_path, {"credsStore": "desktop"})
    assert docker_config_auth("r.azurecr.io", path) == RegistryAuth.basic(null_user, "refresh-1")


def test_the_https_spelling_is_tried_and_unknown_hosts_fall_back_to_auths(
    tmp_path: Path, bin_dir: Path
) -> None:
    calls = _helper(bin_dir, "pass", {"https://hub.example": _answer("ann", "s3")})
    inline = base64.b64encode(b"carl:pw2").decode()
    path = _config(tmp_path, {"credsStore": "pass", "auths": {"c.io": {"auth": inline}}})
    assert docker_config_auth("hub.example", path) == RegistryAuth.basic("ann", "s3")
    assert calls.read_text().split() == ["hub.example", "https://hub.example"]
    assert docker_config_auth("c.io", path) == RegistryAuth.basic("carl", "pw2")
    assert docker_config_auth("nowhere.io", path) is None


@pytest.mark.parametrize(
    ("name", "answer", "warning"),
    [
        ("missing", None, "FileNotFoundError"),
        ("garbled", "not json", "unreadable answer"),
        ("../evil", None, "not a helper name"),
    ],
)
def test_a_broken_helper_is_one_warning_and_no_secret(
    tmp_path: Path,
    bin_dir: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    answer: str | None,
    warning: str,
) -> None:
    if answer is not None:
        _helper(bin_dir, name, {"h.io": answer})
    path = _config(tmp_path, {"credHelpers": {"h.io": name}})
    with caplog.at_level(logging.WARNING):
        assert docker_config_auth("h.io", path) is None
    assert [r.getMessage() for r in caplog.records if warning in r.getMessage()]
    assert "not json" not in caplog.text


def test_docker_config_env_names_the_folder(tmp_path: Path) -> None:
    assert docker_config_path({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    assert docker_config_path({}) == Path.home() / ".docker" / "config.json"
