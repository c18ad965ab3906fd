"""``acr-replicator doctor``: what will fail in the configured set-up, and how to fix it.

Reads the app settings (``load_settings(os.environ)``) like the function does. ``--app``
(default ``$AZURE_FUNCTION_APP_ID``) adds the deployed app's scale settings to the budget
plan; ``--backfill`` lists the source once and prints a full backfill's ETA. One line
per check (``PASS`` / ``WARN`` / ``FAIL``, and the fix for each warn or fail), or with
``--json`` one object ``{"ok": bool, "checks": [...]}``. Exit 0 when nothing fails, 1 when
something does, 2 when the checks could not run (bad settings).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from replicator.adapters.azure.credentials import registry_credentials
from replicator.adapters.azure.functionapp import queue_concurrency
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.app.doctor.budget_checks import PlanOptions
from replicator.app.doctor.run import Check, run_doctor
from replicator.app.doctor.verdicts import CheckStatus
from replicator.cli.exits import EXIT_FAILURES, EXIT_OK
from replicator.domain.config import load_settings

APP_ID_SETTING = "AZURE_FUNCTION_APP_ID"  # infra/main.bicep's output (azd puts it in .env)
# The host.json deployed with the package (beside function_app.py): the queue trigger's
# per-instance concurrency, which ARM does not report
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the configured registries, identities, roles and network before they bite",
        description="What will fail in the configured set-up, and how to fix it.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--app",
        metavar="ARM_ID",
        default=os.environ.get(APP_ID_SETTING) or None,
        help="the function app's ARM id, for its scale settings in the budget plan "
        f"(default: ${APP_ID_SETTING}, the deployment's output)",
    )
    parser.add_argument(
        "--backfill",
        action="store_true",
        help="list the source once (catalog + tags) and print how long a full backfill takes",
    )
    parser.add_argument(
        "--copy-mib-per-second",
        type=_throughput,
        metavar="N",
        help="the fleet's copy throughput, for the backfill's time in bytes (ACR publishes "
        "no bandwidth figure)",
    )
    parser.set_defaults(func=run)


def _throughput(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of MiB a second: {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ)
    registries = Registries(
        plain_http=settings.uses_plain_http,
        credentials=registry_credentials(settings),
        retry=RetryPolicy(attempts=2),
    )
    with registries:
        plan = PlanOptions(
            app_id=args.app,
            backfill=args.backfill,
            mib_per_second=args.copy_mib_per_second,
            queue=queue_concurrency(HOST_JSON),
        )
        checks = run_doctor(settings, registries, plan, retry_total=1)
    if args.json:
        ok = all(check.ok for check in checks)
        json.dump({"ok": ok, "checks": [c.to_dict() for c in checks]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_checks(checks, sys.stdout)
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILURES


def print_checks(checks: list[Check], stream: TextIO) -> None:
    for check in checks:
        line = f"{check.status.upper():4}  {check.registry}  {check.name}: {check.detail}"
        if check.fix and check.status != CheckStatus.PASS:
            line += f"  -> fix: {check.fix}"
        stream.write(line + "\n")
    failed = sum(not c.ok for c in checks)
    warned = sum(c.status == CheckStatus.WARN for c in checks)
    stream.write(f"{len(checks)} checks: {failed} failed, {warned} warnings\n")
