"""The registry transport: one small ``httpx.Client`` per registry (``replicator.adapters.oci.
registries``), against real registries (plain and TLS) and a forwarding proxy.

Connections are counted from this process's own sockets (``/proc/self/fd`` and
``/proc/net/tcp``), so the tests see what really went over the wire, not the library's
bookkeeping.
"""

from __future__ import annotations

import hashlib
import os
import resource
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import trustme
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devstack.faulty_proxy import FaultyProxy
from devstack.localstack import LocalStack, Registry, free_port
from devstack.testimages import push_test_image
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.domain.errors import TransientRegistryError
from replicator.domain.reference import ImageRef

NO_RETRY = RetryPolicy(attempts=1)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def connections_to(port: int) -> int:
    """Established TCP connections of this process to 127.0.0.1:``port``."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    wanted = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == wanted and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def _port(host: str) -> int:
    return int(host.rsplit(":", 1)[1])


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_many_threads_share_a_few_connections(registry: Registry) -> None:
    ref = ImageRef(registry.host, "pool/app", "v1")
    with Registries(max_connections=3) as registries:
        pushed = push_test_image(registries, ref, layers=1, referrers=False)
        client = registries.client(registry.host)
        with ThreadPoolExecutor(8) as threads:
            digests = list(threads.map(lambda _: client.head_manifest(ref), range(240)))
        assert {d.digest if d else None for d in digests} == {pushed.digest}
        assert 1 <= connections_to(_port(registry.host)) <= 3


def test_sequential_requests_keep_one_connection(registry: Registry) -> None:
    ref = ImageRef(registry.host, "pool/seq", "v1")
    with Registries() as registries:
        push_test_image(registries, ref, layers=1, referrers=False)
        client = registries.client(registry.host)
        for _ in range(50):
            assert client.get_manifest(ref).digest  # a body read to the end each time
            assert client.head_manifest(ref) is not None
        assert connections_to(_port(registry.host)) == 1
    assert connections_to(_port(registry.host)) == 0  # closed with the Registries


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
        assert connections_to(_port(source.host)) <= 2
        assert connections_to(_port(target.host)) <= 2


def test_connections_on_high_file_descriptors_are_reused(registry: Registry) -> None:
    """A busy worker's sockets can sit above fd 1023, where ``select`` gives up."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    fillers = [os.dup(0) for _ in range(1100)]
    try:
        with Registries() as registries:
            http = registries.http_client(registry.host)
            for _ in range(5):
                assert http.get(f"{registry.url}/v2/").status_code == 200
            assert connections_to(_port(registry.host)) == 1
    finally:
        for fd in fillers:
            os.close(fd)


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
        http = registries.http_client(registry.host)
        holding = client.open_blob("pool/full", pushed.blobs[0])  # the only connection
        with holding, pytest.raises(httpx.PoolTimeout):
            http.head(f"{registry.url}/v2/")
        assert http.get(f"{registry.url}/v2/").status_code == 200  # free again


def test_nothing_listening_is_a_transient_error() -> None:
    with Registries(retry=NO_RETRY) as registries:
        host = f"127.0.0.1:{free_port()}"
        with pytest.raises(TransientRegistryError, match="ConnectError"):
            registries.client(host).head_blob("a/b", "sha256:" + "0" * 64)


# -- proxies from the environment ------------------------------------------------------------
def test_a_proxy_in_the_environment_is_used_with_the_same_limit(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = ImageRef(registry.host, "proxy/app", "v1")
    with Registries() as direct:
        pushed = push_test_image(direct, ref, layers=1, referrers=False)
    with FaultyProxy(registry.host) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.host}")
        with Registries(max_connections=2) as registries:
            client = registries.client(registry.host)
            with ThreadPoolExecutor(8) as threads:
                found = list(threads.map(lambda _: client.head_manifest(ref), range(80)))
            assert {d.digest if d else None for d in found} == {pushed.digest}
            assert 1 <= connections_to(proxy.port) <= 2
            assert connections_to(_port(registry.host)) == 0
    through = [r for r in proxy.requests if r.startswith("HEAD ")]
    assert len(through) >= 80  # more when the proxy dropped a kept-alive line (retried)
    assert all(f"http://{registry.host}/v2/proxy/app/manifests/v1" in r for r in through)


def test_no_proxy_alone_changes_nothing(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "example.com,.internal")
    ref = ImageRef(registry.host, "proxy/plain", "v1")
    with Registries(max_connections=3) as registries:
        push_test_image(registries, ref, layers=1, referrers=False)
        client = registries.client(registry.host)
        with ThreadPoolExecutor(8) as threads:
            found = list(threads.map(lambda _: client.head_manifest(ref), range(120)))
        assert all(found)
        assert 1 <= connections_to(_port(registry.host)) <= 3  # the limit still holds


def test_no_proxy_exempts_a_registry_from_the_proxy(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultyProxy(registry.host) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.host}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with Registries() as registries:
            assert registries.http_client(registry.host).get(f"{registry.url}/v2/").is_success
    assert proxy.requests == []


# -- TLS ---------------------------------------------------------------------------------
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
    with registries, pytest.raises(TransientRegistryError, match="CERTIFICATE_VERIFY_FAILED"):
        registries.client(registry.host).head_blob("tls/app", "sha256:" + "0" * 64)


# -- dependency spans --------------------------------------------------------------------
def test_every_registry_request_is_a_dependency_span(registry: Registry) -> None:
    """Azure Monitor's distro instruments httpx's transport (its ``httpx`` instrumentation,
    on by default): what that instrumentor records for the registry client, read back
    through the in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with Registries() as registries:
            client = registries.client(registry.host)
            assert client.head_blob("spans/app", "sha256:" + "0" * 64) is None
            before = client.requests
            client.head_manifest(ImageRef(registry.host, "spans/app", "v1"))
            client.head_blob("spans/app", "sha256:" + "1" * 64)
            sent = client.requests - before
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    spans = exporter.get_finished_spans()
    assert sent == 2
    assert len(spans) == 3  # one per request, the first one's included
    assert all(s.kind is SpanKind.CLIENT for s in spans)
    attributes = [dict(s.attributes or {}) for s in spans]
    assert {a.get("http.request.method") or a.get("http.method") for a in attributes} == {"HEAD"}
    urls = [str(a.get("url.full") or a.get("http.url")) for a in attributes]
    assert all(u.startswith(f"{registry.url}/v2/spans/app/") for u in urls)
    assert [
        a.get("http.response.status_code") or a.get("http.status_code") for a in attributes
    ] == [404, 404, 404]


CONFIGURED = """
import json, os
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from replicator.adapters.azure import telemetry
from replicator.domain.reference import ImageRef
from replicator.adapters.oci.registries import Registries
telemetry.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": os.environ["CS"]})
exporter = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
host = os.environ["REGISTRY"]
with Registries() as registries, telemetry.span("copy") as parent:  # as the worker does
    client = registries.client(host)
    client.head_manifest(ImageRef(host, "spans/app", "v1"))
    client.head_blob("spans/app", "sha256:" + "0" * 64)
    client.head_blob("spans/app", "sha256:" + "1" * 64)
    sent = client.requests
spans = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
parent_id = parent.get_span_context().span_id
print(json.dumps({
    "sent": sent,
    "spans": [dict(s.attributes) for s in spans],
    "children": [s.parent is not None and s.parent.span_id == parent_id for s in spans],
}), flush=True)
os._exit(0)  # skip the exporter's flush to an endpoint that is not there
"""


def test_configured_telemetry_gives_a_dependency_span_per_registry_request(
    registry: Registry, tmp_path: Path
) -> None:
    """As the worker runs: ``configure_telemetry`` (Azure Monitor's distro) instruments
    httpx, and each registry request becomes one client span under the job's span (none
    with the old hand-written transport, which httpx's instrumentation never saw)."""
    import json
    import subprocess
    import sys

    env = {
        **os.environ,
        "CS": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=http://127.0.0.1:9/",
        "TMPDIR": str(tmp_path),
        "REGISTRY": registry.host,
        # every span kept: the distro's default sampler keeps about 5 traces a second,
        # by its own clock (Application Insights' sampling, not what is tested here)
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", CONFIGURED],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["sent"] == 3
    urls = [s.get("url.full") or s.get("http.url") for s in seen["spans"]]
    assert len(urls) == 3
    assert all(str(u).startswith(f"{registry.url}/v2/spans/app/") for u in urls)
    assert seen["children"] == [True] * 3  # under the job's span, sampled with it
