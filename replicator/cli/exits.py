"""The exit codes of every command (CONTRACT: 0 done, 1 done with failures or drift,
2 bad usage or set-up, or the answer could not be told), defined once."""

from __future__ import annotations

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
