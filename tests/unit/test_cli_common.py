"""The settings diff, sync and verify share (replicator/cli/common.py)."""

from __future__ import annotations

import pytest

from replicator.cli import build_parser
from replicator.cli.common import pair_settings
from replicator.domain.errors import ConfigError


@pytest.mark.parametrize("command", ["diff", "sync", "verify"])
def test_every_pair_command_reads_the_budgets_as_the_app_does(command: str) -> None:
    args = build_parser(command).parse_args(
        [command, "--source", "a.io", "--target", "b.azurecr.io"]
    )
    env = {
        "REPLICATOR_RATE_LIMITS": '{"a.io": {"read": 600}}',
        "REPLICATOR_SOURCE_SHARE": "0.25",
        "REPLICATOR_TARGET_SHARE": "0.75",
        "REPLICATOR_REGISTRY_SKUS": '{"b.azurecr.io": "Premium"}',
    }
    settings = pair_settings(args, env)
    assert (settings.source_share, settings.target_share) == (0.25, 0.75)
    assert settings.rate_limits["a.io"].rate("read") == 600
    assert settings.skus == {"b.azurecr.io": "Premium"}


def test_a_bad_source_and_a_bad_share_are_told_at_once() -> None:
    args = build_parser("diff").parse_args(
        ["diff", "--source", "http://x/y", "--target", "b.azurecr.io"]
    )
    with pytest.raises(ConfigError) as caught:
        pair_settings(args, {"REPLICATOR_SOURCE_SHARE": "2"})
    assert [p.split()[0].rstrip(":") for p in caught.value.problems] == [
        "--source",
        "REPLICATOR_SOURCE_SHARE",
    ]
