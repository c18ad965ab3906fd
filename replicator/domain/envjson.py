"""An app setting that holds a JSON object (REPLICATOR_RATE_LIMITS, REPLICATOR_REGISTRY_SKUS,
REPLICATOR_IDENTITIES), read one way."""

from __future__ import annotations

import json
from typing import Any


def json_object(raw: str, name: str, shape: str, problems: list[str]) -> dict[str, Any] | None:
    """``raw``, the setting ``name``, as a JSON object; ``None``, with a problem appended,
    when it is not JSON or not an object (``shape``: what it must be, for that message)."""
    try:
        loaded = json.loads(raw)
    except ValueError as exc:
        problems.append(f"{name} is not valid JSON: {exc}")
        return None
    if not isinstance(loaded, dict):
        problems.append(f"{name} must be {shape}")
        return None
    return loaded
