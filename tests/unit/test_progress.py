"""The one progress display (replicator/cli/progress.py) and the copier's events fed to it."""

from __future__ import annotations

import io
import threading

import pytest

from replicator.cli.copy import copier_events
from replicator.cli.progress import Progress, human_size, progress, wanted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("tty", "json", "no_progress", "expected"),
    [
        (True, False, False, True),
        (True, True, False, False),  # --json: machine-read, no progress even on a terminal
        (True, False, True, False),
        (False, False, False, False),  # redirected
    ],
)
def test_wanted_only_on_a_terminal_and_never_with_json(
    tty: bool, json: bool, no_progress: bool, expected: bool
) -> None:
    stream = Terminal() if tty else io.StringIO()
    assert wanted(stream, json=json, no_progress=no_progress) is expected


def test_a_disabled_display_counts_and_writes_nothing() -> None:
    out = Terminal()
    with progress(3, "images", enabled=False, stream=out) as bar:
        bar.advance(nbytes=10)
        bar.grow(2, 5)
    assert (bar.done, bar.total, bar.bytes, bar.total_bytes) == (1, 5, 10, 5)
    assert out.getvalue() == ""


def test_the_line_is_redrawn_on_each_item_and_at_most_ten_times_a_second_for_bytes() -> None:
    out, clock = Terminal(), Clock()
    bar = Progress(4, "images", enabled=True, stream=out, clock=clock)
    bar.advance(0, nbytes=1)  # the first draw
    bar.advance(0, nbytes=1)  # within 0.1 s: bytes alone do not redraw
    assert out.getvalue().count("\r") == 1
    bar.advance()  # an item finished: always redrawn
    assert out.getvalue().count("\r") == 2
    clock.now += 0.2
    bar.advance(0, nbytes=1)
    assert out.getvalue().count("\r") == 3
    bar.close()
    text = out.getvalue()
    assert text.endswith("\n")
    last = text.rstrip("\n").rsplit("\r", 1)[1]
    assert last.startswith("[#####...............] 1/4 images  3 B")
    assert "ETA" in last


def test_close_draws_the_last_state_and_nothing_when_nothing_happened() -> None:
    idle = Terminal()
    with progress(0, "blobs", enabled=True, stream=idle):
        pass
    assert idle.getvalue() == ""

    out, clock = Terminal(), Clock()
    bar = Progress(2, "images", enabled=True, stream=out, clock=clock)
    bar.advance(nbytes=2048)
    bar.advance(0, nbytes=2048)  # not drawn (throttled) ...
    bar.close()  # ... but the closing line shows it
    bar.close()  # closing twice ends the line once
    last = out.getvalue().rstrip("\n").rsplit("\r", 1)[1]
    assert out.getvalue().count("\n") == 1
    assert last.startswith("[##########..........] 1/2 images  4.0 KiB")


def test_a_shorter_line_blanks_what_is_left_of_the_longer_one() -> None:
    out, clock = Terminal(), Clock()
    bar = Progress(0, "blobs", enabled=True, stream=out, clock=clock, total_bytes=1 << 30)
    bar.advance(0, nbytes=1)
    first = out.getvalue()
    bar.grow(0, -((1 << 30) - 1))  # the total shrinks: the line gets shorter
    clock.now += 1
    bar.advance()
    second = out.getvalue()[len(first) :]
    assert "ETA" in first and "ETA" not in second
    assert len(second) == len(first) and second.endswith(" ")


def test_threads_advancing_at_once_lose_no_count() -> None:
    bar = Progress(8000, "blobs", enabled=True, stream=Terminal())

    def work() -> None:
        for _ in range(1000):
            bar.advance(nbytes=3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (bar.done, bar.bytes) == (8000, 24000)


def test_the_copiers_events_reach_the_end_of_the_bar_when_blobs_are_mounted() -> None:
    out = Terminal()
    with progress(0, "blobs", enabled=True, stream=out) as bar:
        on = copier_events(bar)
        on("blobs", count=3, total=300)
        on("bytes", count=100)
        on("blob", digest="sha256:a", action="copied", size=100)
        on("blob", digest="sha256:b", action="mounted", size=150)
        on("blob", digest="sha256:c", action="skipped", size=50)
        on("done", digest="sha256:d", already=False)
    assert (bar.done, bar.total, bar.bytes, bar.total_bytes) == (3, 3, 100, 100)
    assert out.getvalue().rstrip("\n").rsplit("\r", 1)[1].startswith("[" + "#" * 20 + "] 3/3")


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (35 * 2**20, "35.0 MiB"),
        (3 << 40, "3072.0 GiB"),
    ],
)
def test_human_size(count: int, text: str) -> None:
    assert human_size(count) == text
