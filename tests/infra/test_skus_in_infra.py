"""The registries' SKUs reach the worker from the deployment (issue 17): Bicep reads each
existing registry's ``sku.name`` and passes ``REPLICATOR_REGISTRY_SKUS``, so the worker
paces itself by the SKU's published limits without an ARM read at run time (AcrPush and
the ABAC roles carry no ``registries/read``)."""

from __future__ import annotations

import re

from tests.infra.bicep_tree import INFRA, load, text, walk


def _main() -> str:
    return text(load("main.bicep").root)


def test_the_role_module_outputs_the_registry_sku() -> None:
    source = text(load("modules/registry-roles.bicep").root)
    assert re.search(r"output sku string = registry\.sku\.name", source)
    assert re.search(r"resource registry '[^']+' existing", source)


def test_the_app_settings_carry_the_skus_of_source_and_targets() -> None:
    source = _main()
    assert "REPLICATOR_REGISTRY_SKUS: string(registrySkus)" in source
    assert "sourceRoles.outputs.sku" in source  # same tenant: the source's own SKU
    assert re.search(r"targetRoles\[i\]\.outputs\.sku", source)
    assert re.search(r"var registrySkus = toObject\(skuEntries,", source)


def test_no_lambda_indexes_a_module_collection() -> None:
    """BCP247: a module or resource collection cannot be indexed by a lambda's variable;
    the SKUs of the targets are gathered by a for-expression instead."""
    lambdas = [n for n in walk(load("main.bicep").root) if n.type == "lambda_expression"]
    assert any("contains(entry, 'sku')" in text(n) for n in lambdas)  # the grammar's name
    for node in lambdas:
        assert not re.search(r"\b(targetRoles|sourceRoles)\b", text(node)), text(node)


def test_a_source_in_another_tenant_is_not_read() -> None:
    assert re.search(r"crossTenant \? \[\] : \[\{ loginServer: source, sku:", _main())
    assert (INFRA / "main.bicep").is_file()
