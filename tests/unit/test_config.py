from __future__ import annotations

import json

import pytest

from replicator.domain.config import load_settings, parse_duration
from replicator.domain.errors import ConfigError
from replicator.domain.model import Strategy

BASE = {"REPLICATOR_SOURCE": "src.azurecr.io", "REPLICATOR_TARGETS": "dr.azurecr.io"}


def test_defaults_from_contract() -> None:
    settings = load_settings(BASE)
    assert settings.source == "src.azurecr.io"
    assert [t.login_server for t in settings.targets] == ["dr.azurecr.io"]
    assert settings.targets[0].strategy is Strategy.AUTO
    assert settings.delete_policy.mode == "keep"
    assert settings.queue_connection == "AzureWebJobsStorage"
    assert settings.reconcile_schedule == "0 */30 * * * *"
    assert settings.arm_endpoint == "https://management.azure.com"
    assert settings.include == () and settings.exclude == ()


def test_settings_are_frozen() -> None:
    settings = load_settings(BASE)
    with pytest.raises(AttributeError):
        settings.source = "other.azurecr.io"  # type: ignore[misc]  # what the test expects refused


def test_json_targets() -> None:
    rid = (
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/drwest"
    )
    targets = json.dumps(
        [
            {"login_server": "drwest.azurecr.io", "resource_id": rid, "strategy": "import"},
            {"login_server": "mirror.example.com:5000", "strategy": "copy"},
        ]
    )
    settings = load_settings({**BASE, "REPLICATOR_TARGETS": targets})
    assert settings.targets[0].resource_id == rid
    assert settings.targets[0].is_acr
    assert settings.targets[1].strategy is Strategy.COPY
    assert not settings.targets[1].is_acr


def test_every_problem_is_listed_at_once() -> None:
    env = {
        "REPLICATOR_TARGETS": '[{"login_server": "dr.azurecr.io", "strategy": "teleport"}]',
        "REPLICATOR_DELETE_POLICY": "nuke",
        "REPLICATOR_RECONCILE_SCHEDULE": "*/5 * * * *",
        "REPLICATOR_ARM_ENDPOINT": "http://insecure",
        "REPLICATOR_PLAIN_HTTP": "bad host!",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    problems = caught.value.problems
    assert len(problems) == 6
    joined = " ".join(problems)
    for name in (
        "REPLICATOR_SOURCE",
        "strategy",
        "DELETE_POLICY",
        "SCHEDULE",
        "ARM_ENDPOINT",
        "PLAIN_HTTP",
    ):
        assert name in joined


@pytest.mark.parametrize(
    ("targets", "fragment"),
    [
        ("not json [", "REPLICATOR_TARGETS"),
        ("[", "not valid JSON"),
        ('[{"login_server": "x.azurecr.io", "strategy": "import"}]', "needs resource_id"),
        ('[{"login_server": "x.azurecr.io", "colour": "red"}]', "unknown keys"),
        ("src.azurecr.io", "must not include the source"),
        ("a.azurecr.io,a.azurecr.io", "twice"),
        ('[{"login_server": "x.azurecr.io", "resource_id": "/nope"}]', "not an ARM registry id"),
    ],
    ids=[
        "bad-host",
        "bad-json",
        "import-without-id",
        "unknown-key",
        "source-as-target",
        "duplicate",
        "bad-resource-id",
    ],
)
def test_bad_targets(targets: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings({**BASE, "REPLICATOR_TARGETS": targets})


@pytest.mark.parametrize(
    ("policy", "mode", "delay"),
    [
        ("keep", "keep", 0),
        ("propagate", "propagate", 0),
        ("propagate-after:2h", "propagate-after", 7200),
        ("propagate-after:1d", "propagate-after", 86400),
    ],
    ids=["keep", "propagate", "after-2h", "after-1d"],
)
def test_delete_policies(policy: str, mode: str, delay: int) -> None:
    settings = load_settings({**BASE, "REPLICATOR_DELETE_POLICY": policy})
    assert (settings.delete_policy.mode, settings.delete_policy.delay_seconds) == (mode, delay)
    assert settings.delete_policy.deletes is (mode != "keep")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("15m", 900), ("1h30m", 5400), ("45s", 45)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_storage_connection_string_or_identity() -> None:
    plain = load_settings({**BASE, "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert plain.storage is not None and plain.storage.connection_string
    assert "UseDevelopment" not in repr(plain.storage)
    identity = load_settings(
        {
            **BASE,
            "REPLICATOR_QUEUE_CONNECTION": "Jobs",
            "Jobs__accountName": "acct",
            "Jobs__clientId": "11111111-1111-1111-1111-111111111111",
        }
    )
    assert identity.storage is not None
    assert identity.storage.queue_service_uri == "https://acct.queue.core.windows.net"
    assert identity.storage.table_service_uri == "https://acct.table.core.windows.net"
    with pytest.raises(ConfigError, match="queue connection 'AzureWebJobsStorage' is not set"):
        load_settings(BASE, require_storage=True)


def test_plain_http_and_registries() -> None:
    settings = load_settings({**BASE, "REPLICATOR_PLAIN_HTTP": "mirror.lan:5000"})
    assert settings.uses_plain_http("mirror.lan:5000")
    assert settings.uses_plain_http("127.0.0.1:5001")
    assert not settings.uses_plain_http("dr.azurecr.io")
    assert settings.registries == {"src.azurecr.io", "dr.azurecr.io"}


AUDIENCES = [
    ("unset-follows-the-login-server", "", None),
    ("china", "https://containerregistry.azure.cn", "https://containerregistry.azure.cn"),
    (
        "scope-form",
        "https://containerregistry.azure.us/.default",
        "https://containerregistry.azure.us",
    ),
    ("arm-audience", "https://management.azure.com/", "https://management.azure.com"),
]


@pytest.mark.parametrize(
    ("value", "audience"), [a[1:] for a in AUDIENCES], ids=[a[0] for a in AUDIENCES]
)
def test_acr_audience_setting(value: str, audience: str | None) -> None:
    settings = load_settings({**BASE, "REPLICATOR_ACR_AUDIENCE": value})
    assert settings.acr_audience == audience


@pytest.mark.parametrize(
    "value", ["http://containerregistry.azure.cn", "containerregistry", "https://"]
)
def test_acr_audience_must_be_an_https_url(value: str) -> None:
    with pytest.raises(ConfigError, match="REPLICATOR_ACR_AUDIENCE must be an https://"):
        load_settings({**BASE, "REPLICATOR_ACR_AUDIENCE": value})
