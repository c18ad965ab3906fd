"""``acr-replicator copy SRC DST``: copy one image, digest for digest.

The whole index with every platform, and the referrers (signatures, SBOMs, attestations)
of every manifest; the tag last. References are ``HOST[:PORT]/REPO[:TAG|@DIGEST]``; a
destination without tag or digest takes the source's. Exit 0 done, 1 the copy failed,
2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from typing import Any, TextIO

from replicator.cli.exits import EXIT_OK
from replicator.domain.errors import InvalidReferenceError
from replicator.domain.reference import ImageRef


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "copy", help="copy one image, digest for digest", description=__doc__
    )
    parser.add_argument("source", metavar="SRC", help="HOST[:PORT]/REPO[:TAG|@DIGEST]")
    parser.add_argument("destination", metavar="DST", help="HOST[:PORT]/REPO[:TAG|@DIGEST]")
    parser.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="blobs copied at once (default 8)"
    )
    parser.add_argument(
        "--plain-http",
        action="append",
        default=[],
        metavar="HOST",
        help="speak plain HTTP to HOST (loopback and REPLICATOR_PLAIN_HTTP are)",
    )
    parser.add_argument("--json", action="store_true", help="the copy report as JSON on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.set_defaults(func=run)


def references(source: str, destination: str) -> tuple[ImageRef, ImageRef]:
    src = ImageRef.parse(source)
    dst = ImageRef.parse(destination, require_image=False)
    if dst.tag is None and dst.digest is None:
        dst = ImageRef(dst.registry, dst.repository, src.tag, src.digest)
    if dst.digest is not None and src.digest is not None and dst.digest != src.digest:
        raise InvalidReferenceError(f"{destination} names another digest than {source}")
    return src, dst


def run(args: argparse.Namespace) -> int:
    from replicator.adapters.oci.copy import ImageCopier
    from replicator.adapters.oci.registries import Registries
    from replicator.cli.workstation import plain_http_hosts, workstation_credentials

    if args.concurrency < 1:
        raise InvalidReferenceError("--concurrency must be at least 1")
    src, dst = references(args.source, args.destination)
    plain = plain_http_hosts(os.environ, args.plain_http)
    show = not args.no_progress and not args.json and sys.stderr.isatty()
    progress = Progress(sys.stderr) if show else None
    started = time.monotonic()
    with Registries(plain_http=plain, credentials=workstation_credentials()) as registries:
        copier = ImageCopier(registries, concurrency=args.concurrency, progress=progress)
        try:
            report = copier.copy_image(src, dst)
        finally:
            if progress is not None:
                progress.finish()
    seconds = time.monotonic() - started
    if args.json:
        json.dump(
            {
                **dataclasses.asdict(report),
                "source": str(src),
                "destination": str(dst),
                "seconds": round(seconds, 3),
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    elif report.already_present:
        print(f"{dst} already at {report.digest}: nothing to copy")
    else:
        print(
            f"copied {src} -> {dst.with_digest(report.digest)}: {report.manifests_copied} "
            f"manifest(s), {report.blobs_copied} blob(s) ({_size(report.bytes_copied)}), "
            f"{report.blobs_mounted} mounted, {report.blobs_skipped} already there, "
            f"{report.referrers_copied} referrer(s) in {seconds:.1f}s"
        )
    return EXIT_OK


class Progress:
    """A one-line progress display on a terminal, redrawn at most ten times a second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.total = self.done = self.blobs = self.blobs_done = 0
        self.drawn = 0.0

    def __call__(self, event: str, **fields: Any) -> None:
        with self.lock:
            if event == "blobs":
                self.blobs += int(fields.get("count", 0))
                self.total += int(fields.get("total", 0))
            elif event == "bytes":
                self.done += int(fields.get("count", 0))
            elif event == "blob":
                self.blobs_done += 1
            now = time.monotonic()
            if now - self.drawn >= 0.1 or event == "blob":
                self.drawn = now
                self.out.write(
                    f"\r{self.blobs_done}/{self.blobs} blobs, "
                    f"{_size(self.done)} of {_size(self.total)}   "
                )
                self.out.flush()

    def finish(self) -> None:
        with self.lock:
            if self.drawn:
                self.out.write("\n")
                self.out.flush()


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count:.1f} GiB"
