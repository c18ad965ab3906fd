"""``acr-replicator doctor``: what will fail in the configured set-up, and how to fix it.

Reads the app settings (``load_settings(os.environ)``) like the function does. One line
per check (``PASS`` / ``WARN`` / ``FAIL``, and the fix for each warn or fail), or with
``--json`` one object ``{"ok": bool, "checks": [...]}``. Exit 0 when nothing fails, 1 when
something does, 2 when the checks could not run (bad settings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from replicator.adapters.azure.credentials import registry_credentials
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.app.doctor.run import Check, run_doctor
from replicator.app.doctor.verdicts import CheckStatus
from replicator.cli.exits import EXIT_FAILURES, EXIT_OK
from replicator.domain.config import load_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the configured registries, identities, roles and network before they bite",
        description="What will fail in the configured set-up, and how to fix it.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ)
    registries = Registries(
        plain_http=settings.uses_plain_http,
        credentials=registry_credentials(settings),
        retry=RetryPolicy(attempts=2),
    )
    with registries:
        checks = run_doctor(settings, registries, retry_total=1)
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
