"""The templates against the code: role ids, app settings, function and queue names,
module parameters, azd wiring, and the alert queries against the emitted telemetry."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import pytest
from tree_sitter import Node

from replicator.adapters.azure import telemetry
from replicator.domain import model
from replicator.domain.model import PLANS_CONTAINER, PLANS_QUEUE
from tests.infra.bicep_tree import (
    INFRA,
    ROOT,
    all_files,
    body,
    load,
    object_property,
    resource_type,
    string_value,
    text,
    walk,
)

# Built-in role ids outside the registry role table (storage, monitoring), checked against
# Microsoft's built-in roles list; the registry roles come from replicator/adapters/acr/roles.json.
ROLE_IDS = {
    "storageQueueDataContributorRoleId": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributorRoleId": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "storageBlobDataOwnerRoleId": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "monitoringMetricsPublisherRoleId": "3913510d-42f4-4e42-8a64-420c390055eb",
}
# CONTRACT.md "App settings", and what the replicator reads besides.
CONTRACT_SETTINGS = {
    "REPLICATOR_SOURCE",
    "REPLICATOR_SOURCE_RESOURCE_ID",
    "REPLICATOR_TARGETS",
    "REPLICATOR_INCLUDE",
    "REPLICATOR_EXCLUDE",
    "REPLICATOR_DELETE_POLICY",
    "REPLICATOR_QUEUE_CONNECTION",
    "REPLICATOR_RECONCILE_SCHEDULE",
    "REPLICATOR_ARM_ENDPOINT",
    "REPLICATOR_PLAIN_HTTP",
    "REPLICATOR_RATE_LIMITS",
    "REPLICATOR_SOURCE_SHARE",
    "REPLICATOR_TARGET_SHARE",
    "REPLICATOR_ACR_AUDIENCE",
    "REPLICATOR_VERIFY_SWEEP",
    "REPLICATOR_REGISTRY_SKUS",
}
FUNCTION_NAMES = {
    "on_registry_event",
    "replicate",
    "run_plan",
    "reconcile",
    "resync",
    "status",
    "replay",
}
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
APP_SETTING_FILES = ("main.bicep", "modules/functionapp.bicep")
Bindings = dict[str, list[dict[str, object]]]


@pytest.fixture
def registered(indexed_functions: Bindings) -> Bindings:
    """The functions function_app.py registers, with their bindings."""
    return indexed_functions


def role_assignments() -> Iterator[tuple[str, Node]]:
    for relative in all_files():
        for name, node in load(relative).declarations("resource").items():
            if resource_type(node).startswith("Microsoft.Authorization/roleAssignments@"):
                yield f"{relative}:{name}", node


def test_role_ids_are_named_variables_with_the_built_in_ids() -> None:
    found: dict[str, str] = {}
    for relative in all_files():
        for name, value in load(relative).variable_strings().items():
            if GUID.match(value):
                assert name.endswith("RoleId"), f"{relative}: GUID in {name} is not a role id"
                assert found.setdefault(name, value) == value, f"{name} differs between files"
    assert found == ROLE_IDS


def assignment_property(props: Node, key: str) -> Node | None:
    """``key`` of a role assignment's properties: an object, or a ``union(...)`` of objects."""
    if props.type == "object":
        return object_property(props, key)
    for node in walk(props):
        if node.type == "object" and (found := object_property(node, key)) is not None:
            return found
    return None


def test_role_assignments_use_guid_names_and_variable_role_ids() -> None:
    seen = list(role_assignments())
    assert len(seen) >= 4
    for where, node in seen:
        obj = body(node)
        name = object_property(obj, "name")
        assert name is not None, where
        assert name.type == "call_expression", where
        assert text(name).startswith("guid("), where
        props = object_property(obj, "properties")
        assert props is not None, where
        role = assignment_property(props, "roleDefinitionId")
        assert role is not None, where
        assert not GUID.search(text(role)), f"{where}: literal role id, use a named variable"
        principal_type = assignment_property(props, "principalType")
        assert principal_type is not None, where
        if where.startswith("modules/deployer-roles.bicep"):
            assert string_value(principal_type) is None, f"{where}: principalType is a parameter"
        else:
            assert string_value(principal_type) == "ServicePrincipal", where  # managed identity


def test_the_deploying_principal_type_is_a_parameter_or_inferred() -> None:
    """Item 8 of issue 13: a hard-coded 'User' fails `azd up` from CI (a service principal)
    with UnmatchedPrincipalType; empty: the property is omitted and ARM infers it."""
    main = load("main.bicep")
    modules = main.declarations("module")
    storage_params = object_property(body(modules["storage"]), "params")
    assert storage_params is not None
    assert object_property(storage_params, "userPrincipalId") is None
    assert "'User'" not in text(load("modules/storage.bicep").root)  # no hard-coded type left
    deployer = object_property(body(modules["deployerRoles"]), "params")
    assert deployer is not None
    assert text(object_property(deployer, "principalType") or deployer) == "principalType"
    assert "''" in text(main.declarations("parameter")["principalType"])
    roles_module = load("modules/deployer-roles.bicep")
    assert "empty(principalType) ? {} : { principalType: principalType }" in text(roles_module.root)
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["principalType"] == {"value": "${AZURE_PRINCIPAL_TYPE=}"}


def test_every_contract_setting_is_wired() -> None:
    wired = set().union(*(load(f).property_names() for f in APP_SETTING_FILES))
    assert wired >= CONTRACT_SETTINGS, CONTRACT_SETTINGS - wired
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    local_only = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "AzureWebJobsFeatureFlags"}
    expected = {k for k in sample if not k.startswith("_help_")} - local_only
    assert expected <= wired, expected - wired


def test_storage_is_identity_only() -> None:
    app = load("modules/functionapp.bicep").root
    assert "'managedidentity'" in text(app)
    wired = load("modules/functionapp.bicep").property_names()
    for suffix in ("accountName", "credential", "clientId", "queueServiceUri", "tableServiceUri"):
        assert f"AzureWebJobsStorage__{suffix}" in wired
    assert "AzureWebJobsStorage" not in wired  # no connection string, no key
    storage = body(load("modules/storage.bicep").declarations("resource")["storage"])
    props = object_property(storage, "properties")
    assert props is not None
    assert text(object_property(props, "allowSharedKeyAccess") or props) == "false"


def test_flex_consumption_python_311_with_a_user_assigned_identity() -> None:
    app = load("modules/functionapp.bicep")
    strings = app.strings()
    assert {"FC1", "FlexConsumption", "python", "UserAssigned", "UserAssignedIdentity"} <= strings
    assert "functionapp,linux" in strings
    assert app.params()["pythonVersion"] is True
    assert "'3.11'" in text(app.declarations("parameter")["pythonVersion"])
    assert "functionAppConfig" in app.property_names()
    assert "azd-service-name" in app.property_names()


def test_queue_and_table_names_match_the_code_and_the_bindings(
    registered: Bindings,
) -> None:
    names = load("modules/storage.bicep").variable_strings()
    assert names["jobsQueueName"] == model.QUEUE_NAME
    assert names["statusTableName"] == model.STATUS_TABLE
    poison = text(load("modules/storage.bicep").declarations("variable")["poisonQueueName"])
    assert "'${jobsQueueName}-poison'" in poison
    assert f"{model.QUEUE_NAME}-poison" == model.POISON_QUEUE_NAME  # the host's convention
    (trigger,) = registered["replicate"]
    assert trigger["queueName"] == names["jobsQueueName"]
    (plans,) = registered["run_plan"]
    assert plans["queueName"] == names["plansQueueName"] == PLANS_QUEUE
    assert names["plansContainerName"] == PLANS_CONTAINER
    assert trigger["connection"] == "AzureWebJobsStorage"  # wired identity-based above
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] >= 1  # then -> the poison queue
    assert host["telemetryMode"] == "openTelemetry"


def test_event_grid_targets_the_registered_function(
    registered: Bindings,
) -> None:
    found = registered
    assert set(found) == FUNCTION_NAMES
    grid = load("eventgrid.bicep")
    default = string_value(grid.declarations("parameter")["functionName"].named_children[-1])
    assert default == "on_registry_event"
    assert [b["type"] for b in found[default]] == ["eventGridTrigger"]
    assert "'${functionAppId}/functions/${functionName}'" in text(grid.root)


def test_event_grid_subscription_shape() -> None:
    grid = load("eventgrid.bicep")
    strings = grid.strings()
    for kind in ("ImagePushed", "ImageDeleted", "ChartPushed", "ChartDeleted"):
        assert f"Microsoft.ContainerRegistry.{kind}" in strings
    assert {"EventGridSchema", "AzureFunction", "StorageBlob", "data.target.repository"} <= strings
    assert {"StringBeginsWith", "StringNotBeginsWith"} <= strings
    props = grid.property_names()
    assert {"retryPolicy", "deadLetterWithResourceIdentity", "maxDeliveryAttempts"} <= props
    assert {"includeRepositoryPrefixes", "excludeRepositoryPrefixes"} <= set(grid.params())


@pytest.mark.parametrize("relative", all_files())
def test_module_parameters_match_their_modules(relative: str) -> None:
    for name, node in load(relative).declarations("module").items():
        path = string_value(node.named_children[1])
        assert path is not None
        module = load(str((INFRA / relative).parent.joinpath(path).resolve().relative_to(INFRA)))
        passed_node = object_property(body(node), "params")
        passed = set()
        if passed_node is not None:
            passed = {text(p.named_children[0]) for p in passed_node.named_children}
        declared = module.params()
        assert passed <= set(declared), f"{name}: unknown {passed - set(declared)}"
        required = {p for p, has_default in declared.items() if not has_default}
        assert required <= passed, f"{name}: missing {required - passed}"


@pytest.mark.parametrize("relative", ["main.bicep", "eventgrid.bicep"])
def test_outputs_are_upper_snake_for_azd(relative: str) -> None:
    outputs = load(relative).declarations("output")
    assert outputs
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in outputs), list(outputs)


def test_azd_parameters_and_hook_use_what_main_bicep_declares_and_outputs() -> None:
    main = load("main.bicep")
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = main.params()
    assert set(given) <= set(declared)
    assert {p for p, d in declared.items() if not d} <= set(given)
    hook = (INFRA / "hooks" / "postdeploy.sh").read_text()
    used = set(re.findall(r"\$\{?(AZURE_[A-Z_]+|REPLICATOR_[A-Z_]+)", hook))
    supplied = set(main.declarations("output")) | {"AZURE_ENV_NAME"}
    supplied |= {"REPLICATOR_EVENT_REPOSITORY_PREFIXES", "REPLICATOR_EVENT_EXCLUDE_PREFIXES"}
    assert used <= supplied, used - supplied
    assert os.access(INFRA / "hooks" / "postdeploy.sh", os.X_OK)


def test_azure_yaml_deploys_the_function_and_runs_the_hook() -> None:
    azure = (ROOT / "azure.yaml").read_text()
    assert re.search(r"^\s+host: function$", azure, re.M)
    assert re.search(r"^\s+language: python$", azure, re.M)
    assert re.search(r"^\s+postdeploy:$", azure, re.M)
    (hook,) = re.findall(r"run: (\S+)", azure)
    assert (ROOT / hook).is_file()


def test_all_metric_names_in_queries_are_emitted() -> None:
    emitted = {
        "jobs",
        "replication_lag_seconds",
        "copy_duration_seconds",
        "bytes_copied",
        "drift_tags",
        "queue_depth",
        "poison_messages",
        "registry_throttled",
        "registry_budget_used",
    }
    source = (ROOT / "replicator" / "adapters" / "azure" / "telemetry.py").read_text()
    assert all(f'"{name}"' in source for name in emitted)
    dimensions = {"outcome", "strategy", "target", "kind", "lag_seconds", "registry", "bucket"}
    assert "lag_seconds" in telemetry.result_fields.__code__.co_varnames or "lag_seconds" in source
    for query in sorted((INFRA / "queries").glob("*.kql")):
        kql = query.read_text()
        names = set(re.findall(r'name == "([a-z_]+)"', kql))
        for group in re.findall(r"name in \(([^)]*)\)", kql):
            names |= set(re.findall(r'"([a-z_]+)"', group))
        assert names <= emitted, f"{query.name}: {names - emitted}"
        used = set(re.findall(r"customDimensions\.([a-z_]+)", kql))
        assert used <= dimensions, f"{query.name}: {used - dimensions}"
        assert names or used, f"{query.name} reads no replicator telemetry"


def test_alerts_and_workbook_load_the_shared_queries() -> None:
    alerts = text(load("modules/alerts.bicep").root)
    for query in ("poison", "failed-jobs", "lag-p95", "drift", "throttled"):
        assert f"loadTextContent('../queries/{query}.kql')" in alerts
    workbook = text(load("modules/workbook.bicep").root)
    for query in ("lag", "outcomes", "drift", "throughput"):
        assert f"loadTextContent('../queries/workbook-{query}.kql')" in workbook
    for loaded in re.findall(r"loadTextContent\('\.\./(queries/[^']+)'\)", alerts + workbook):
        assert (INFRA / loaded).is_file()


def test_no_secret_or_key_in_the_templates() -> None:
    for relative in all_files():
        source = text(load(relative).root)
        assert "listKeys(" not in source, relative
        assert "AccountKey=" not in source, relative
        assert "InstrumentationKey=" not in source, relative


def test_operations_doc_shows_the_queries_the_alerts_run() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for query in sorted((INFRA / "queries").glob("*.kql")):
        assert query.read_text().strip() in doc, f"docs/operations.md is missing {query.name}"
