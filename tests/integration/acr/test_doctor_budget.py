"""``doctor``'s whole budget plan (issue 17) against the ARM double and real local
registries: the deployed app's scale settings read through ARM (``--app``, else the
deployment's ``AZURE_FUNCTION_APP_ID``) and a full backfill's ETA from one listing of the
source (``--backfill``), in requests and, with the registry's size from ARM's listUsages
and ``--copy-mib-per-second``, in bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.testimages import seed
from replicator.adapters.oci.registries import Registries
from replicator.cli import main
from tests.doubles.arm import ArmPair, FakeSite
from tests.doubles.identity import FUNCTION_MI

Checks = dict[tuple[str, str], dict[str, Any]]


def doctor(
    pair: ArmPair,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    **extra: str,
) -> tuple[int, Checks]:
    for key, value in pair.env("auto", **extra).items():
        monkeypatch.setenv(key, value)
    code = main(["doctor", "--json", *args])
    report = json.loads(capsys.readouterr().out)
    return code, {(c["registry"], c["check"]): c for c in report["checks"]}


@pytest.fixture
def app(pair: ArmPair, monkeypatch: pytest.MonkeyPatch) -> FakeSite:
    """The deployed app (what infra/modules/functionapp.bicep sets: 40 instances of 2048
    MB), readable by the identity doctor runs as (Reader on its resource group)."""
    monkeypatch.delenv("AZURE_FUNCTION_APP_ID", raising=False)
    site = pair.arm.add_site(FakeSite("func-replicator", resource_group="rg-app"))
    group = f"/subscriptions/{site.subscription}/resourceGroups/{site.resource_group}"
    pair.arm.assignments.assign(FUNCTION_MI, "Reader", group)
    return site


def test_the_apps_scale_settings_are_read_through_arm(
    pair: ArmPair, app: FakeSite, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    app.maximum_instance_count = 25
    code, checks = doctor(pair, monkeypatch, capsys, "--app", app.resource_id)
    scale = checks[(app.name, "scale")]
    assert scale["status"] == "pass"
    assert "up to 25 instances of 2048 MB" in scale["detail"]
    # host.json: batchSize 16 + newBatchThreshold 8 per instance
    assert "24 jobs at once per instance" in scale["detail"]
    assert "600 jobs in flight at most" in scale["detail"]
    sites = [t for m, t in pair.arm.requests if "/Microsoft.Web/sites/" in t]
    assert sites and all("api-version=" in t for t in sites)
    assert code == 0


def test_the_app_id_comes_from_the_deployments_output(
    pair: ArmPair, app: FakeSite, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("AZURE_FUNCTION_APP_ID", app.resource_id)
    _, checks = doctor(pair, monkeypatch, capsys)
    assert checks[(app.name, "scale")]["status"] == "pass"


def test_without_the_app_no_scale_is_read(
    pair: ArmPair, app: FakeSite, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _, checks = doctor(pair, monkeypatch, capsys)
    assert not [key for key in checks if key[1] in {"scale", "backfill"}]
    assert not [t for _, t in pair.arm.requests if "/Microsoft.Web/" in t]


def test_an_app_doctor_may_not_read_warns_with_the_role(
    pair: ArmPair, app: FakeSite, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    pair.arm.assignments.held.clear()  # not even Reader: ARM answers 403
    _, checks = doctor(pair, monkeypatch, capsys, "--app", app.resource_id)
    scale = checks[(app.name, "scale")]
    assert scale["status"] == "warn"
    assert "AuthorizationFailed" in scale["detail"] or "authorization" in scale["detail"]
    assert "Microsoft.Web/sites/read" in scale["fix"]


def test_an_app_off_flex_consumption_says_so(
    pair: ArmPair, app: FakeSite, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    app.flex = False
    _, checks = doctor(pair, monkeypatch, capsys, "--app", app.resource_id)
    assert "no functionAppConfig.scaleAndConcurrency" in checks[(app.name, "scale")]["detail"]


def test_a_bad_app_id_is_one_clear_failed_check(
    pair: ArmPair, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, checks = doctor(pair, monkeypatch, capsys, "--app", "func-replicator")
    assert code == 1
    assert "not an ARM function app id" in checks[("app", "scale")]["detail"]


def test_the_backfill_eta_counts_one_listing_of_the_source(
    pair: ArmPair,
    app: FakeSite,
    registries: Registries,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    # team/app:1.0 is there already; 4 more tags, one a second name for a digest
    seed(
        registries,
        pair.source.host,
        [("team/app", "1.1", 2), ("team/app", "latest", 2), ("team/web", "1.0", 3)],
    )
    pair.source.size_bytes = 30 * 1024**3
    pair.arm.assign(FUNCTION_MI, "Reader", pair.source)
    limits = json.dumps({pair.source.host: {"read": 600, "referrers": 60}})
    code, checks = doctor(
        pair,
        monkeypatch,
        capsys,
        "--app",
        app.resource_id,
        "--backfill",
        "--copy-mib-per-second",
        "10",
        REPLICATOR_RATE_LIMITS=limits,
    )
    backfill = checks[(pair.source.host, "backfill")]
    assert backfill["status"] == "pass", backfill
    detail = backfill["detail"]
    assert "4 tags (3 distinct manifests) in 2 repositories" in detail
    # 3 fresh manifests x 16 reads + 1 repeat HEAD + the listing's requests; 3 x 3 referrers
    assert "9 referrers calls" in detail
    assert "30.0 GiB stored" in detail
    assert "51 min through copy targets at 10 MiB/s" in detail  # 30 GiB / 10 MiB/s
    assert code == 0


def test_a_backfill_without_arm_size_still_gives_the_request_eta(
    pair: ArmPair, registries: Registries, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The identity may not list the source's usages (AcrPull cannot): the ETA in
    requests stands, the bytes say why they are unknown."""
    _, checks = doctor(pair, monkeypatch, capsys, "--backfill")
    detail = checks[(pair.source.host, "backfill")]["detail"]
    assert "1 tags (1 distinct manifests) in 1 repositories" in detail
    assert "bytes: size unknown (listUsages:" in detail
