"""Secrets out of log lines: ``redact(text)`` and the ``RedactionFilter`` that applies it
to every record's message, arguments and string ``extra`` fields (``install_redaction``).

Bearer and basic credentials, JWTs, ``password=`` / ``token=`` style pairs (form, JSON,
connection strings), SAS signatures, storage account keys and URL passwords become ``***``.
Plain logging only: no OpenTelemetry here (``telemetry`` installs the filter).
"""

from __future__ import annotations

import logging
import re

# LogRecord attributes that ``extra=`` may not overwrite (logging raises KeyError).
RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "***"),
    (
        re.compile(
            r"(?i)\b(password|passwd|pwd|secret|client_secret|access_token|refresh_token"
            r"|token|accountkey|sharedaccesskey|sig|assertion|client_assertion)"
            r"(\"?\s*[:=]\s*\"?)([^\s\"'&;,]+)"
        ),
        r"\1\2***",
    ),
    (re.compile(r"(?i)(https?://[^\s/:@]+:)[^\s/@]+@"), r"\1***@"),
    (re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])"), "***"),
)


def redact(text: str) -> str:
    """``text`` with bearer/basic credentials, JWTs, passwords, tokens, signatures,
    account keys and URL passwords replaced by ``***``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactionFilter(logging.Filter):
    """Scrubs secrets from a record's message, arguments and string ``extra`` fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                message = f"{record.msg} {record.args!r}"
            record.msg, record.args = redact(message), None
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        for key, value in list(record.__dict__.items()):
            if key not in RESERVED and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def install_redaction(logger: logging.Logger) -> None:
    """Add the filter to ``logger`` and to each of its handlers (a handler's filter sees
    every record that propagates to it). Idempotent."""
    for holder in (logger, *logger.handlers):
        if not any(isinstance(f, RedactionFilter) for f in holder.filters):
            holder.addFilter(RedactionFilter())
