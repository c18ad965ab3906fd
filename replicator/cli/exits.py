"""The exit codes of every command (CONTRACT: 0 done, 1 done with failures or drift,
2 bad usage or set-up, or the answer could not be told), defined once; and the one-line
error a command exits with."""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILURES = 1  # done, with failures, or drift / something missing found
    USAGE = 2  # bad usage or set-up, or the answer could not be told
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), the shell's convention


EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = (
    Exit.OK,
    Exit.FAILURES,
    Exit.USAGE,
    Exit.INTERRUPTED,
)
EXIT_DRIFT = EXIT_FAILURES
EXIT_UNKNOWN = EXIT_USAGE


def one_line(args: argparse.Namespace, exc: Exception, code: int, then: str = "") -> int:
    """Called while handling ``exc``: re-raise it under ``--debug``, else one line on
    stderr (``then`` appended) and ``code``."""
    if args.debug:
        raise exc
    print(f"acr-replicator: error: {exc}{then}", file=sys.stderr)
    return code
