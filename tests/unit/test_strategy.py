from __future__ import annotations

import pytest

from replicator.config import Settings
from replicator.model import Strategy, Target
from replicator.strategy import choose_strategy

RID = (
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/contosodr"
)
SRC_RID = RID.replace("contosodr", "contososrc")

CASES = [
    # (id, source, source resource id, target, expected, reason fragment)
    (
        "copy-configured",
        "src.azurecr.io",
        SRC_RID,
        Target("dr.azurecr.io", RID, Strategy.COPY),
        Strategy.COPY,
        "copy is configured",
    ),
    (
        "import-configured",
        "mirror.example.com",
        None,
        Target("dr.azurecr.io", RID, Strategy.IMPORT),
        Strategy.IMPORT,
        "import is configured",
    ),
    (
        "auto-both-acr",
        "src.azurecr.io",
        None,
        Target("dr.azurecr.io", RID),
        Strategy.IMPORT,
        "both ends are ACR",
    ),
    (
        "auto-sovereign",
        "src.azurecr.cn",
        None,
        Target("dr.azurecr.cn", RID),
        Strategy.IMPORT,
        "both ends are ACR",
    ),
    (
        "auto-source-by-id-on-loopback",
        "127.0.0.1:5000",
        SRC_RID,
        Target("127.0.0.1:5001", RID),
        Strategy.IMPORT,
        "both ends are ACR",
    ),
    (
        "auto-no-target-id",
        "src.azurecr.io",
        SRC_RID,
        Target("dr.azurecr.io"),
        Strategy.COPY,
        "no resource_id",
    ),
    (
        "auto-source-not-acr",
        "ghcr.io",
        None,
        Target("dr.azurecr.io", RID),
        Strategy.COPY,
        "not an ACR",
    ),
]


@pytest.mark.parametrize(
    ("source", "source_id", "target", "expected", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_choose_strategy(
    source: str, source_id: str | None, target: Target, expected: Strategy, reason: str
) -> None:
    settings = Settings(source=source, targets=(target,), source_resource_id=source_id)
    choice = choose_strategy(settings, target)
    assert choice.strategy is expected
    assert reason in choice.reason
    assert choice.imports is (expected is Strategy.IMPORT)
