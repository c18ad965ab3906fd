"""The fields that were free text (issue 16): a job's origin, an identity's mode, a doctor
check's status and a registry auth's kind take only their names, and still equal them."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from replicator.adapters.oci.credentials import AuthKind, RegistryAuth
from replicator.app.doctor.verdicts import Check, CheckStatus
from replicator.domain.errors import InvalidJobError
from replicator.domain.identities import (
    IdentityMode,
    RegistryIdentity,
    parse_identity_settings,
)
from replicator.domain.model import ORIGINS, Action, CopyJob, Origin

DIGEST = "sha256:" + "a" * 64


def _job(origin: str) -> CopyJob:
    return CopyJob(Action.PUSH, "src.io", "dst.io", "team/app", DIGEST, "v1", origin=origin)  # type: ignore[arg-type]


def test_a_job_with_an_unknown_origin_is_refused_where_it_is_made() -> None:
    """It used to be made and sent, and only the worker's decoder refused it (poisoned)."""
    assert (
        ORIGINS
        == frozenset(get_args(Origin))
        == {
            "event",
            "reconcile",
            "resync",
            "cli",
            "replay",
        }
    )
    for origin in ORIGINS:
        assert CopyJob.from_json(_job(origin).to_json()).origin == origin
    with pytest.raises(InvalidJobError, match="unknown origin 'nightly'"):
        _job("nightly")


def test_an_identity_mode_is_an_identity_mode_and_equals_its_name() -> None:
    identity = RegistryIdentity(mode="federated", tenant_id="t", client_id="c")  # type: ignore[arg-type]
    assert identity.mode == "federated"  # the name it had
    assert identity.mode is IdentityMode.FEDERATED
    assert identity.cross_tenant
    with pytest.raises(ValueError, match="'federate'"):
        RegistryIdentity(mode="federate")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, IdentityMode.DEFAULT),
        ({"IDENTITY_ENDPOINT": "http://169.254.169.254/msi"}, IdentityMode.MANAGED),
        ({"REPLICATOR_IDENTITY": "none"}, IdentityMode.NONE),
    ],
)
def test_the_default_mode_parsed_from_the_settings_is_a_mode(
    env: dict[str, str], mode: IdentityMode
) -> None:
    problems: list[str] = []
    settings = parse_identity_settings(env, problems)
    assert problems == []
    assert settings.default_mode is mode
    assert settings.for_registry("x.azurecr.io").mode is mode
    assert settings.for_registry("127.0.0.1:5000").mode is IdentityMode.NONE
    entries = {"src.azurecr.io": "secret"}
    parse_identity_settings({"REPLICATOR_IDENTITIES": json.dumps(entries)}, problems)
    assert problems == [
        "REPLICATOR_IDENTITIES['src.azurecr.io']: mode secret needs tenant_id and client_id "
        "and secret_setting"
    ]


def test_a_check_with_a_misspelt_status_is_refused_not_counted_as_ok() -> None:
    """``ok`` was ``status != "fail"``: a check made with ``"failed"`` passed doctor."""
    with pytest.raises(ValueError, match="'failed'"):
        Check("r.io", "roles", "failed", "missing AcrPush")  # type: ignore[arg-type]
    check = Check("r.io", "roles", "fail", "missing AcrPush")  # type: ignore[arg-type]
    assert check.status is CheckStatus.FAIL and not check.ok
    answer = check.to_dict()
    assert answer["status"] == "fail" and type(answer["status"]) is str
    assert json.loads(json.dumps(answer))["status"] == "fail"


def test_an_auth_kind_is_an_auth_kind_and_equals_its_name() -> None:
    assert RegistryAuth.basic("u", "p").kind is AuthKind.BASIC
    assert RegistryAuth.refresh_token("t").kind == "refresh_token"
    assert RegistryAuth.anonymous().kind is AuthKind.ANONYMOUS
    assert RegistryAuth("basic", "u", "p") == RegistryAuth.basic("u", "p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'bearer'"):
        RegistryAuth("bearer")  # type: ignore[arg-type]
