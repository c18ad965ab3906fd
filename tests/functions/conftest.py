from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import pytest

# Valid settings before function_app is imported: it validates them at start-up, as the host does.
FUNCTION_ENV = {
    "REPLICATOR_SOURCE": "127.0.0.1:5001",
    "REPLICATOR_TARGETS": "127.0.0.1:5002",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


@pytest.fixture(scope="session")
def function_app() -> Iterator[ModuleType]:
    saved = {k: os.environ.get(k) for k in FUNCTION_ENV}
    os.environ.update(FUNCTION_ENV)
    try:
        yield importlib.import_module("function_app")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
