"""The connection pool under concurrency, against a real registry: bounded and reused."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from replicator.localstack import Registry
from replicator.oci.pool import LinearConnectionPool
from replicator.oci.reference import ImageRef
from replicator.oci.registries import Registries
from replicator.oci.testimages import push_test_image


def test_many_threads_share_a_few_connections(registry: Registry) -> None:
    ref = ImageRef(registry.host, "pool/app", "v1")
    with Registries(max_connections=3) as registries:
        pushed = push_test_image(registries, ref, layers=1, referrers=False)
        client = registries.client(registry.host)
        pool = registries.http._transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool, LinearConnectionPool)
        peak = 0

        def head(_: int) -> str | None:
            nonlocal peak
            found = client.head_manifest(ref)
            peak = max(peak, len(pool.connections))
            return found.digest if found else None

        with ThreadPoolExecutor(8) as threads:
            digests = list(threads.map(head, range(240)))
        assert digests == [pushed.digest] * 240
        assert 1 <= peak <= 3
        assert client.requests >= 240
