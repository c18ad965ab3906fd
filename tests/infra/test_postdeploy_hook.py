"""The azd postdeploy hook, run for real with a scripted `az` on PATH (the Azure CLI and
a subscription are what this machine cannot have): what it deploys, with which values.

The scripted `az` answers `eventgrid system-topic list/show` from the environment
(AZ_TOPICS: tab-separated `id source` lines as `--query "[].[id, source]" -o tsv`
prints them; AZ_TOPIC_*: the found topic's properties), in the shapes the Azure CLI
prints for Microsoft.EventGrid/systemTopics (2022-06-15: `source`, `location`, `tags`,
`identity.type`, `identity.userAssignedIdentities`)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.infra.bicep_tree import INFRA, load, text

HOOK = INFRA / "hooks" / "postdeploy.sh"
SOURCE_ID = (
    "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/registry-rg"
    "/providers/Microsoft.ContainerRegistry/registries/contoso"
)
DR_RG = "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg-dr/providers"
IDENTITY = f"{DR_RG}/Microsoft.ManagedIdentity/userAssignedIdentities/id-abc"
TOPICS = (
    "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/{rg}"
    "/providers/Microsoft.EventGrid/systemTopics/{name}"
)
FAKE_AZ = f"""#!/bin/sh
printf '%s\\n' "$*" >> "$AZ_LOG"
case "$1 $2 $3" in
  "eventgrid system-topic list")
    if [ -n "${{AZ_TOPICS_REFUSED:-}}" ]; then echo "(AuthorizationFailed)" >&2; exit 1; fi
    printf '%b' "${{AZ_TOPICS:-}}"; exit 0 ;;
  "eventgrid system-topic show")
    case "$*" in
      *"--query location"*) echo northeurope ;;
      *"--query source"*) echo "$AZ_TOPIC_SOURCE" ;;
      *"identity.type"*) echo "${{AZ_TOPIC_IDENTITY_TYPE:-}}" ;;
      *"keys(identity"*) printf '%b' "${{AZ_TOPIC_IDENTITIES:-}}" ;;
      *"--query tags"*) printf '{{\\n  "owner": "platform"\\n}}\\n' ;;
    esac
    exit 0 ;;
esac
case "$1 $2" in
  "functionapp function") echo on_registry_event ;;
  "acr show") echo westeurope ;;
  "storage account") echo {DR_RG}/Microsoft.Storage/storageAccounts/stabc ;;
esac
"""


def parameters(deploy: str) -> dict[str, str]:
    """``name=value`` pairs after ``--parameters`` (values hold no spaces here)."""
    return dict(re.findall(r"(\w+)=(\S*)", deploy.split("--parameters", 1)[1]))


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
        "AZURE_IDENTITY_ID": IDENTITY,
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
    given = parameters(deploy)
    assert given["sourceRegistryName"] == "contoso"
    assert given["sourceRegistryId"] == SOURCE_ID
    assert given["topicName"] == ""  # no topic yet: eventgrid.bicep creates one
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


def other_topic(rg: str, name: str, registry: str) -> str:
    source = SOURCE_ID.replace("/registries/contoso", f"/registries/{registry}")
    return f"{TOPICS.format(rg=rg, name=name)}\t{source}\n"


def test_an_existing_topic_in_another_group_gets_only_the_subscription(tmp_path: Path) -> None:
    """One system topic per source: it is found by its source over the subscription (here
    in another group, its source id in other case) and reused; its identities and tags stay,
    the replicator's identity is added."""
    existing = TOPICS.format(rg="events-rg", name="contoso-events")
    kept = f"{DR_RG}/Microsoft.ManagedIdentity/userAssignedIdentities/id-platform"
    done, calls = run_hook(
        tmp_path,
        AZ_TOPICS=other_topic("rg-x", "other", "fabrikam") + f"{existing}\t{SOURCE_ID.upper()}\n",
        AZ_TOPIC_SOURCE=SOURCE_ID.upper(),
        AZ_TOPIC_IDENTITY_TYPE="SystemAssigned, UserAssigned",
        AZ_TOPIC_IDENTITIES=f"{kept}\\n{IDENTITY.upper()}\\n",
    )
    assert done.returncode == 0, done.stderr
    assert "already has the system topic contoso-events" in done.stdout
    (listing,) = [c for c in calls if c.startswith("eventgrid system-topic list")]
    assert "--subscription 11111111-1111-1111-1111-111111111111" in listing
    (deploy,) = [c for c in calls if c.startswith("deployment group create")]
    assert "--resource-group events-rg" in deploy
    given = parameters(deploy)
    assert given["topicName"] == "contoso-events"
    assert given["sourceRegistryId"] == SOURCE_ID.upper()  # the topic's own, unchanged
    assert given["location"] == "northeurope"  # the topic's, not the registry's
    assert given["keepSystemAssignedIdentity"] == "true"
    # the identity already there is kept; ours is added by eventgrid.bicep, once
    assert given["otherUserAssignedIdentities"] == f'{{"{kept}":{{}}}}'
    assert not any(c.startswith("acr show") for c in calls)


def test_tags_of_an_existing_topic_are_passed_on(tmp_path: Path) -> None:
    existing = TOPICS.format(rg="events-rg", name="contoso-events")
    done, calls = run_hook(
        tmp_path, AZ_TOPICS=f"{existing}\t{SOURCE_ID}\n", AZ_TOPIC_SOURCE=SOURCE_ID
    )
    assert done.returncode == 0, done.stderr
    (deploy,) = [c for c in calls if c.startswith("deployment group create")]
    assert 'topicTags={  "owner": "platform"}' in deploy
    assert parameters(deploy)["keepSystemAssignedIdentity"] == "false"
    assert parameters(deploy)["otherUserAssignedIdentities"] == "{}"


def test_topics_of_other_registries_are_not_reused(tmp_path: Path) -> None:
    done, calls = run_hook(tmp_path, AZ_TOPICS=other_topic("registry-rg", "t1", "contoso2"))
    assert done.returncode == 0, done.stderr
    (deploy,) = [c for c in calls if c.startswith("deployment group create")]
    assert "--resource-group registry-rg" in deploy
    assert parameters(deploy)["topicName"] == ""


def test_a_refused_topic_listing_degrades_to_creating_one(tmp_path: Path) -> None:
    done, calls = run_hook(tmp_path, AZ_TOPICS_REFUSED="1")
    assert done.returncode == 0, done.stderr
    assert "Microsoft.EventGrid/systemTopics/read" in done.stderr
    (deploy,) = [c for c in calls if c.startswith("deployment group create")]
    assert "--resource-group registry-rg" in deploy


def test_eventgrid_bicep_merges_identities_and_keeps_an_existing_topic() -> None:
    grid = load("eventgrid.bicep")
    source = " ".join(text(grid.root).split())
    assert "union(otherUserAssignedIdentities, { '${identityId}': {} })" in source
    assert "keepSystemAssignedIdentity ? 'SystemAssigned, UserAssigned' : 'UserAssigned'" in source
    assert (
        "empty(topicName) ? '${abbrs.eventGridSystemTopics}${resourceToken}' : topicName" in source
    )
    assert "tags: union(topicTags, tags)" in source
    assert "source: sourceRegistryId" in source
