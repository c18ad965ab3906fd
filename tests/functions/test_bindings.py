"""Pin every binding the Functions host indexes, through app.get_functions()."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from replicator.domain.model import PLANS_QUEUE, QUEUE_NAME

ROOT = Path(__file__).resolve().parents[2]


Bindings = dict[str, list[dict[str, Any]]]


def test_the_seven_functions(indexed_functions: Bindings) -> None:
    assert set(indexed_functions) == {
        "on_registry_event",
        "replicate",
        "run_plan",
        "reconcile",
        "resync",
        "status",
        "replay",
    }


def test_event_grid_trigger(indexed_functions: Bindings) -> None:
    (binding,) = indexed_functions["on_registry_event"]
    assert binding == {"direction": "IN", "type": "eventGridTrigger", "name": "event"}


def test_queue_trigger(indexed_functions: Bindings) -> None:
    (binding,) = indexed_functions["replicate"]
    assert binding == {
        "direction": "IN",
        "type": "queueTrigger",
        "name": "msg",
        "queueName": QUEUE_NAME,
        "connection": "AzureWebJobsStorage",
    }
    assert QUEUE_NAME == "replication-jobs"


def test_plans_queue_trigger(indexed_functions: Bindings) -> None:
    """Plans have their own queue (CONTRACT.md): a worker of an older version, bound to
    replication-jobs only, never receives one."""
    (binding,) = indexed_functions["run_plan"]
    assert binding == {
        "direction": "IN",
        "type": "queueTrigger",
        "name": "msg",
        "queueName": PLANS_QUEUE,
        "connection": "AzureWebJobsStorage",
    }
    assert PLANS_QUEUE == "replication-plans"


def test_timer_trigger(indexed_functions: Bindings) -> None:
    (binding,) = indexed_functions["reconcile"]
    assert binding == {
        "direction": "IN",
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "%REPLICATOR_RECONCILE_SCHEDULE%",
        "runOnStartup": False,
        "useMonitor": True,
    }


@pytest.mark.parametrize(
    ("name", "method", "level"),
    [("resync", "POST", "FUNCTION"), ("status", "GET", "FUNCTION"), ("replay", "POST", "ADMIN")],
)
def test_http_routes(indexed_functions: Bindings, name: str, method: str, level: str) -> None:
    trigger, output = indexed_functions[name]
    assert trigger["type"] == "httpTrigger" and trigger["direction"] == "IN"
    assert trigger["route"] == name
    assert trigger["methods"] == [method]
    assert trigger["authLevel"] == level
    assert output == {"direction": "OUT", "type": "http", "name": "$return"}


def test_queue_connection_follows_the_setting() -> None:
    code = (
        "import os, json; os.environ.update(REPLICATOR_SOURCE='a.azurecr.io', "
        "REPLICATOR_TARGETS='b.azurecr.io', REPLICATOR_QUEUE_CONNECTION='Jobs', "
        "Jobs__queueServiceUri='https://acct.queue.core.windows.net'); import function_app; "
        "f=[f for f in function_app.app.get_functions() if f.get_function_name()=='replicate'][0]; "
        "print(json.loads(f.get_function_json())['bindings'][0]['connection'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "Jobs"


def test_bad_settings_fail_start_up_listing_every_problem() -> None:
    code = (
        "import os; os.environ['REPLICATOR_TARGETS']='[{\"strategy\":\"x\"}]'; import function_app"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "ConfigError" in last
    for fragment in ("REPLICATOR_SOURCE is required", "strategy must be", "AzureWebJobsStorage"):
        assert fragment in last


def test_host_json_matches_the_queue_client() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"  # the queue client sends TextBase64EncodePolicy
    assert queues["maxDequeueCount"] >= 1
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    assert host["telemetryMode"] == "openTelemetry"
