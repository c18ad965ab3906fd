"""The one progress display of the commands: a single line on a terminal's stderr.

API (used by ``copy``, ``sync`` and ``verify``)::

    enabled = wanted(sys.stderr, json=args.json, no_progress=args.no_progress)
    with progress(total, "images", enabled=enabled) as bar:
        bar.advance()            # one item done
        bar.advance(nbytes=n)    # bytes moved, no item finished (a blob's chunk)
        bar.grow(items, nbytes)  # more work found on the way (a copy learns its blobs)

``progress`` yields a :class:`Progress` whether or not it is enabled; a disabled one counts
and draws nothing, so callers never branch. It is thread-safe (a copy's blob threads
advance it). The line is redrawn at most ten times a second, and whenever an item
finishes; leaving the block draws the last state and ends the line. Nothing is ever
written to stdout, and :func:`wanted` is false with ``--json``, ``--no-progress`` or when
stderr is not a terminal, so redirected and machine-read output carries no progress.

``[########............] 120/300 images  35.2 MiB of 88.0 MiB  12.3/s  4.1 MiB/s  ETA 0m14s``
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

WIDTH = 20  # characters of the bar
REDRAW_SECONDS = 0.1


def wanted(stream: TextIO, *, json: bool = False, no_progress: bool = False) -> bool:
    """Whether to show progress: on a terminal, never with ``--json`` or ``--no-progress``."""
    if json or no_progress:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Counts of items and bytes, drawn as one line when enabled (see the module)."""

    def __init__(
        self,
        total: int,
        label: str,
        *,
        enabled: bool,
        stream: TextIO | None = None,
        total_bytes: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.total_bytes = total_bytes
        self.done = self.bytes = 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._drawn_at: float | None = None
        self._width = 0

    def advance(self, n: int = 1, *, nbytes: int = 0) -> None:
        """``n`` more items done and ``nbytes`` more bytes moved."""
        with self._lock:
            self.done += n
            self.bytes += nbytes
            self._draw(force=n > 0)

    def grow(self, n: int = 0, nbytes: int = 0) -> None:
        """``n`` more items and ``nbytes`` more bytes to do than announced."""
        with self._lock:
            self.total += n
            self.total_bytes += nbytes
            self._draw(force=False)

    def line(self) -> str:
        """The line as it would be drawn now."""
        elapsed = max(self._clock() - self._started, 1e-6)
        if self.total_bytes:
            fraction = self.bytes / self.total_bytes
        else:
            fraction = self.done / self.total if self.total else 1.0
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(WIDTH * fraction)
        parts = [
            f"[{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} {self.label}",
            human_size(self.bytes)
            + (f" of {human_size(self.total_bytes)}" if self.total_bytes else ""),
            f"{self.done / elapsed:.1f}/s",
            f"{human_size(int(self.bytes / elapsed))}/s",
        ]
        if 0.0 < fraction < 1.0:
            eta = int(elapsed * (1 - fraction) / fraction)
            parts.append(f"ETA {eta // 60}m{eta % 60:02d}s")
        return "  ".join(parts)

    def close(self) -> None:
        """Draw the last state and end the line (if anything was drawn or done)."""
        with self._lock:
            if not self.enabled or (self._drawn_at is None and not (self.done or self.bytes)):
                return
            self._draw(force=True)
            self._stream.write("\n")
            self._stream.flush()
            self.enabled = False

    def _draw(self, *, force: bool) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not force and self._drawn_at is not None and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        text = self.line()
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)


@contextmanager
def progress(
    total: int,
    label: str,
    *,
    enabled: bool,
    stream: TextIO | None = None,
    total_bytes: int = 0,
) -> Iterator[Progress]:
    """A :class:`Progress` for the block, closed (line ended) on the way out, even on error."""
    bar = Progress(total, label, enabled=enabled, stream=stream, total_bytes=total_bytes)
    try:
        yield bar
    finally:
        bar.close()


def human_size(count: int) -> str:
    """``512 B``, ``1.5 KiB``, ``35.2 MiB``, ``1.2 GiB``."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
