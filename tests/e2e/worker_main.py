"""A worker process for the kill test: the local queue runner driving ``replicate``.

Settings come from the environment, as in the Functions host. Two knobs shorten what the
host would hold for minutes, so a crash is recovered within a test:
``E2E_RUN_LEASE`` (how long a received message stays invisible: after a crash it comes
back then) and ``E2E_CLAIM_LEASE`` (how long a push claimed by a dead worker counts as
under way). Prints the run's statistics as JSON when the queue is drained.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

from devstack import localrun
from devstack.localrun import QueueOptions
from devstack.localworker import work_as_an_instance
from replicator.adapters.azure import claims


def main() -> int:
    localrun.RUN_LEASE_SECONDS = int(os.environ.get("E2E_RUN_LEASE", "600"))
    claims.CLAIM_LEASE = timedelta(seconds=float(os.environ.get("E2E_CLAIM_LEASE", "600")))
    options = QueueOptions(
        batch_size=4, visibility_timeout=0, max_dequeue_count=5, max_polling_interval=0.2
    )
    timeout = float(os.environ.get("E2E_TIMEOUT", "120"))
    stats = work_as_an_instance(os.environ, options, timeout)
    print(json.dumps(stats.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
