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
import time
from collections.abc import Callable
from typing import Any

from replicator.cli.exits import EXIT_OK
from replicator.cli.progress import Progress, human_size, progress, wanted
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
    show = wanted(sys.stderr, json=args.json, no_progress=args.no_progress)
    started = time.monotonic()
    with (
        Registries(plain_http=plain, credentials=workstation_credentials()) as registries,
        progress(0, "blobs", enabled=show) as bar,
    ):
        events = copier_events(bar) if show else None
        copier = ImageCopier(registries, concurrency=args.concurrency, progress=events)
        report = copier.copy_image(src, dst)
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
            f"manifest(s), {report.blobs_copied} blob(s) ({human_size(report.bytes_copied)}), "
            f"{report.blobs_mounted} mounted, {report.blobs_skipped} already there, "
            f"{report.referrers_copied} referrer(s) in {seconds:.1f}s"
        )
    return EXIT_OK


def copier_events(bar: Progress) -> Callable[..., None]:
    """The copier's progress events (``blobs``, ``bytes``, ``blob``) fed to ``bar``: a blob
    mounted or already there leaves the bytes to move, so the bar can reach its end."""

    def on(event: str, **fields: Any) -> None:
        if event == "blobs":
            bar.grow(int(fields.get("count", 0)), int(fields.get("total", 0)))
        elif event == "bytes":
            bar.advance(0, nbytes=int(fields.get("count", 0)))
        elif event == "blob":
            if fields.get("action") != "copied":
                bar.grow(0, -max(int(fields.get("size", 0)), 0))
            bar.advance()

    return on
