"""The HTTP transport (``replicator.oci.pool``): pooled, bounded, and failing as httpx does.

Against a real registry (plain and TLS), and against raw socket servers that misbehave on
cue (close idle connections, never answer).
"""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trustme

from replicator.errors import TransientRegistryError
from replicator.localstack import LocalStack, Registry, free_port
from replicator.oci.copy import ImageCopier
from replicator.oci.pool import PooledTransport
from replicator.oci.reference import ImageRef
from replicator.oci.registries import Registries
from replicator.oci.testimages import push_test_image
from replicator.oci.transport import RetryPolicy

NO_RETRY = RetryPolicy(attempts=1)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _transport(registries: Registries) -> PooledTransport:
    transport = registries.http._transport  # type: ignore[attr-defined]
    assert isinstance(transport, PooledTransport)
    return transport


def test_many_threads_share_a_few_connections(registry: Registry) -> None:
    ref = ImageRef(registry.host, "pool/app", "v1")
    with Registries(max_connections=3) as registries:
        pushed = push_test_image(registries, ref, layers=1, referrers=False)
        client = registries.client(registry.host)
        with ThreadPoolExecutor(8) as threads:
            digests = list(threads.map(lambda _: client.head_manifest(ref), range(240)))
        assert {d.digest if d else None for d in digests} == {pushed.digest}
        assert _transport(registries).opened <= 3


def test_sequential_requests_keep_one_connection(registry: Registry) -> None:
    ref = ImageRef(registry.host, "pool/seq", "v1")
    with Registries() as registries:
        push_test_image(registries, ref, layers=1, referrers=False)
        opened = _transport(registries).opened
        client = registries.client(registry.host)
        for _ in range(50):
            assert client.get_manifest(ref).digest  # a body read to the end each time
            assert client.head_manifest(ref) is not None
        assert _transport(registries).opened == opened


def test_the_limit_is_per_registry(registry_pair: tuple[Registry, Registry]) -> None:
    """A copy holds a source connection while it uploads to the target: with one limit for
    both, blobs copied at once could hold every connection and wait for a target one."""
    source, target = registry_pair
    timeout = httpx.Timeout(10.0, pool=2.0)
    with Registries(max_connections=2, timeout=timeout, retry=NO_RETRY) as registries:
        src = ImageRef(source.host, "pool/wide", "v1")
        pushed = push_test_image(
            registries, src, platforms=("linux/amd64",), layers=6, referrers=False
        )
        dst = ImageRef(target.host, "pool/wide", "v1")
        report = ImageCopier(registries, concurrency=6).copy_image(src, dst)
        assert report.digest == pushed.digest
        assert report.blobs_copied == len(set(pushed.blobs))
        assert _transport(registries).connections <= 4  # two per registry


def test_connections_on_high_file_descriptors_are_reused(registry: Registry) -> None:
    """A busy worker's sockets can sit above fd 1023, where ``select`` gives up."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    fillers = [os.dup(0) for _ in range(1100)]
    try:
        with Registries() as registries:
            for _ in range(5):
                assert registries.http.get(f"{registry.url}/v2/").status_code == 200
            transport = _transport(registries)
            assert transport.opened == 1
    finally:
        for fd in fillers:
            os.close(fd)


def test_a_body_left_unread_closes_its_connection(registry: Registry) -> None:
    ref = ImageRef(registry.host, "pool/unread", "v1")
    with Registries() as registries:
        pushed = push_test_image(registries, ref, layers=1, layer_size=300_000, referrers=False)
        client = registries.client(registry.host)
        transport = _transport(registries)
        before = transport.opened
        with client.open_blob("pool/unread", pushed.blobs[0]) as response:
            next(response.iter_raw())  # one chunk of 300 kB, then give up
        assert client.head_manifest(ref) is not None  # works, on a new connection
        assert transport.opened == before + 1


def test_a_streamed_upload_without_length_is_sent_chunked(registry: Registry) -> None:
    data = b"chunked upload " * 50_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with Registries() as registries:
        client = registries.client(registry.host)
        _, location = client.start_upload("pool/chunked")
        pieces = (data[i : i + 65536] for i in range(0, len(data), 65536))
        client.finish_upload("pool/chunked", location, digest, pieces, None)
        assert client.head_blob("pool/chunked", digest) == len(data)


def test_a_full_pool_waits_then_times_out(registry: Registry) -> None:
    timeout = httpx.Timeout(5.0, pool=0.3)
    ref = ImageRef(registry.host, "pool/full", "v1")
    with Registries(max_connections=1, timeout=timeout, retry=NO_RETRY) as registries:
        pushed = push_test_image(registries, ref, layers=1, layer_size=300_000, referrers=False)
        client = registries.client(registry.host)
        holding = client.open_blob("pool/full", pushed.blobs[0])  # the only connection
        with holding, pytest.raises(httpx.PoolTimeout):
            registries.http.head(f"{registry.url}/v2/")
        assert registries.http.get(f"{registry.url}/v2/").status_code == 200  # free again


@contextmanager
def raw_server(reply: bytes | None, close_after: bool) -> Iterator[int]:
    """A loopback server: sends ``reply`` (or nothing) to each request, closing after it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    connections: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(conn)
            conn.recv(65536)
            if reply is not None:
                conn.sendall(reply)
            if close_after:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in connections:
            conn.close()
        listener.close()


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    transport = PooledTransport(limits=httpx.Limits(max_connections=4))
    with raw_server(OK, close_after=True) as port, httpx.Client(transport=transport) as h:
        for _ in range(3):  # each one finds the last connection closed by the server
            assert h.get(f"http://127.0.0.1:{port}/").text == "ok"
        assert transport.opened == 3


def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    transport = PooledTransport(limits=httpx.Limits(max_connections=4))
    timeout = httpx.Timeout(5.0, read=0.3)
    with (
        raw_server(None, close_after=False) as port,
        httpx.Client(transport=transport, timeout=timeout) as h,
    ):
        with pytest.raises(httpx.ReadTimeout):
            h.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.ReadTimeout):  # the slot was given back
            h.get(f"http://127.0.0.1:{port}/")


def test_a_body_cut_short_is_a_protocol_error_not_an_end() -> None:
    transport = PooledTransport(limits=httpx.Limits(max_connections=4))
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
    with (
        raw_server(short, close_after=True) as port,
        httpx.Client(transport=transport) as h,
        pytest.raises(httpx.RemoteProtocolError, match="6 bytes before the end"),
    ):
        h.get(f"http://127.0.0.1:{port}/")


def test_nothing_listening_is_a_connect_error() -> None:
    with Registries(retry=NO_RETRY) as registries:
        with pytest.raises(httpx.ConnectError):
            registries.http.get(f"http://127.0.0.1:{free_port()}/v2/")
        with pytest.raises(TransientRegistryError):  # what the registry client makes of it
            registries.client(f"127.0.0.1:{free_port()}").head_blob("a/b", "sha256:" + "0" * 64)


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, trustme.CA]]:
    ca = trustme.CA()
    folder: Path = tmp_path_factory.mktemp("tls")
    issued = ca.issue_cert("127.0.0.1")
    issued.private_key_pem.write_to_path(str(folder / "key.pem"))
    issued.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    with LocalStack() as stack:
        port = free_port()
        http = {
            "addr": f"127.0.0.1:{port}",
            "secret": "tls-test",
            "tls": {"certificate": str(folder / "cert.pem"), "key": str(folder / "key.pem")},
        }
        yield stack.start_registry(config={"http": http}, port=port), ca


def test_tls_to_a_registry_with_a_trusted_certificate(
    tls_registry: tuple[Registry, trustme.CA],
) -> None:
    registry, ca = tls_registry
    context = ssl.create_default_context()
    ca.configure_trust(context)
    ref = ImageRef(registry.host, "tls/app", "v1")
    with Registries(plain_http=lambda host: False, verify=context) as registries:
        pushed = push_test_image(registries, ref, referrers=False)
        found = registries.client(registry.host).head_manifest(ref)
        assert found is not None and found.digest == pushed.digest


def test_tls_refuses_a_certificate_nobody_trusts(
    tls_registry: tuple[Registry, trustme.CA],
) -> None:
    registry, _ = tls_registry
    registries = Registries(plain_http=lambda host: False, retry=NO_RETRY)
    with registries, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        registries.http.get(f"https://{registry.host}/v2/")


def test_a_proxy_in_the_environment_keeps_httpx_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    with Registries() as registries:
        own = registries.http._transport  # type: ignore[attr-defined]
        assert not isinstance(own, PooledTransport)
        assert own._pool._max_connections >= 2**31  # no limit shared by source and target
    monkeypatch.delenv("HTTPS_PROXY")
    with Registries() as registries:
        assert isinstance(registries.http._transport, PooledTransport)  # type: ignore[attr-defined]
