"""Which Entra audience doctor says a registry's token exchange gets, and whether the
registry takes it (issue 13 item 12): the worker's audience (``registry_audience``: the
setting, else the login server's cloud), an ARM one only while the registry's
``azureADAuthenticationAsArmPolicy`` is enabled."""

from __future__ import annotations

import pytest

from replicator.adapters.acr.arm import RegistryProperties
from replicator.adapters.azure.credentials import registry_audience
from replicator.adapters.oci.credentials import acr_audience
from replicator.app.doctor.audience_checks import audience_check, is_arm_audience
from replicator.app.doctor.verdicts import Check
from replicator.domain.config import load_settings

ARM = "https://management.azure.com"


def props(host: str, *, arm_tokens: bool) -> RegistryProperties:
    return RegistryProperties("contoso", host, "Premium", arm_audience_accepted=arm_tokens)


def check(host: str, setting: str = "", *, arm_tokens: bool | None, endpoint: str = ARM) -> Check:
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": host,
            "REPLICATOR_TARGETS": "dr.azurecr.io",
            **({"REPLICATOR_ACR_AUDIENCE": setting} if setting else {}),
        }
    )
    return audience_check(
        host,
        registry_audience(settings, host),
        configured=settings.acr_audience is not None,
        works=acr_audience(host),
        arm_endpoint=endpoint,
        props=None if arm_tokens is None else props(host, arm_tokens=arm_tokens),
    )


@pytest.mark.parametrize(
    ("host", "audience"),
    [
        ("contoso.azurecr.io", "https://containerregistry.azure.net"),
        ("contoso.azurecr.cn", "https://containerregistry.azure.cn"),
        ("contoso.azurecr.us", "https://containerregistry.azure.us"),
    ],
)
def test_the_derived_audience_is_the_clouds_and_passes_whatever_the_policy(
    host: str, audience: str
) -> None:
    verdict = check(host, arm_tokens=False)
    assert verdict.status == "pass"
    assert verdict.detail.startswith(f"tokens are asked for {audience} (from the login server's")
    assert "ARM-audience tokens are refused here" in verdict.detail


def test_an_arm_audience_on_a_sovereign_registry_refusing_it_names_the_clouds_acr_audience() -> (
    None
):
    verdict = check(
        "contoso.azurecr.cn", "https://management.chinacloudapi.cn/.default", arm_tokens=False
    )
    assert verdict.status == "fail"
    assert "https://management.chinacloudapi.cn (REPLICATOR_ACR_AUDIENCE)" in verdict.detail
    assert "https://containerregistry.azure.cn works" in verdict.detail
    assert "set REPLICATOR_ACR_AUDIENCE to https://containerregistry.azure.cn" in verdict.fix
    assert "authentication-as-arm update -r contoso --status enabled" in verdict.fix


def test_an_arm_audience_passes_while_the_policy_is_enabled_and_warns_when_unread() -> None:
    assert check("contoso.azurecr.io", ARM, arm_tokens=True).status == "pass"
    unread = check("contoso.azurecr.io", ARM, arm_tokens=None)
    assert unread.status == "warn"
    assert "could not be read" in unread.detail
    assert "https://containerregistry.azure.net" in unread.fix


def test_the_arm_endpoint_in_use_counts_as_an_arm_audience() -> None:
    endpoint = "https://arm.example.test:8443"
    assert is_arm_audience(f"{endpoint}/.default", endpoint + "/")
    assert not is_arm_audience("https://containerregistry.azure.net", endpoint)
    verdict = check("contoso.azurecr.io", endpoint, arm_tokens=False, endpoint=endpoint)
    assert verdict.status == "fail"


def test_an_acr_audience_of_another_cloud_warns() -> None:
    verdict = check("contoso.azurecr.io", "https://containerregistry.azure.cn", arm_tokens=True)
    assert verdict.status == "warn"
    assert "not this login server's cloud's (https://containerregistry.azure.net)" in (
        verdict.detail
    )
