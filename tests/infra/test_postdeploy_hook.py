"""The azd postdeploy hook, run for real with a scripted `az` on PATH (the Azure CLI and
a subscription are what this machine cannot have): what it deploys, with which values."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from bicep_tree import INFRA, load

HOOK = INFRA / "hooks" / "postdeploy.sh"
SOURCE_ID = (
    "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/registry-rg"
    "/providers/Microsoft.ContainerRegistry/registries/contoso"
)
DR_RG = "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg-dr/providers"
FAKE_AZ = f"""#!/bin/sh
printf '%s\\n' "$*" >> "$AZ_LOG"
case "$1 $2" in
  "functionapp function") echo on_registry_event ;;
  "acr show") echo westeurope ;;
  "storage account") echo {DR_RG}/Microsoft.Storage/storageAccounts/stabc ;;
esac
"""


def run_hook(tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    fake = tmp_path / "bin" / "az"
    fake.parent.mkdir()
    fake.write_text(FAKE_AZ)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "az.log"
    env = {
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "AZ_LOG": str(log),
        "AZURE_ENV_NAME": "dr",
        "AZURE_FUNCTION_APP_NAME": "func-abc",
        "AZURE_FUNCTION_APP_ID": f"{DR_RG}/Microsoft.Web/sites/func-abc",
        "AZURE_RESOURCE_GROUP": "rg-dr",
        "AZURE_IDENTITY_ID": f"{DR_RG}/Microsoft.ManagedIdentity/userAssignedIdentities/id-abc",
        "AZURE_STORAGE_ACCOUNT_NAME": "stabc",
        "AZURE_DEADLETTER_CONTAINER": "eventgrid-deadletter",
        "REPLICATOR_SOURCE_RESOURCE_ID": SOURCE_ID,
        **extra,
    }
    done = subprocess.run(["sh", str(HOOK)], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_deploys_eventgrid_into_the_source_group_with_the_filters(tmp_path: Path) -> None:
    done, calls = run_hook(
        tmp_path,
        REPLICATOR_EVENT_REPOSITORY_PREFIXES="team/, base/",
        REPLICATOR_EVENT_EXCLUDE_PREFIXES="",
    )
    assert done.returncode == 0, done.stderr
    (deploy,) = [c for c in calls if c.startswith("deployment group create")]
    assert "--subscription 11111111-1111-1111-1111-111111111111" in deploy
    assert "--resource-group registry-rg" in deploy
    assert f"--template-file {HOOK.parent}/../eventgrid.bicep" in deploy
    given = dict(re.findall(r"(\w+)=(\S*)", deploy.split("--parameters", 1)[1]))
    assert given["sourceRegistryName"] == "contoso"
    assert given["location"] == "westeurope"
    assert given["includeRepositoryPrefixes"] == '["team/","base/"]'
    assert given["excludeRepositoryPrefixes"] == "[]"
    assert given["deadLetterStorageAccountId"].endswith("/storageAccounts/stabc")
    declared = load("eventgrid.bicep").params()
    assert set(given) <= set(declared)
    assert {p for p, has_default in declared.items() if not has_default} <= set(given)
    assert calls.index(next(c for c in calls if c.startswith("functionapp function show"))) == 0


def test_cross_tenant_source_stops_before_deploying(tmp_path: Path) -> None:
    done, calls = run_hook(tmp_path, REPLICATOR_CROSS_TENANT="true")
    assert done.returncode == 0
    assert "WebHook" in done.stdout or "webhook" in done.stdout
    assert calls == []


@pytest.mark.parametrize("missing", ["AZURE_FUNCTION_APP_NAME", "REPLICATOR_SOURCE_RESOURCE_ID"])
def test_refuses_to_run_outside_azd(tmp_path: Path, missing: str) -> None:
    done, calls = run_hook(tmp_path, **{missing: ""})
    assert done.returncode != 0
    assert missing in done.stderr
    assert calls == []
