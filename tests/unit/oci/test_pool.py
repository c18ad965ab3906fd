"""``LinearConnectionPool`` decides exactly as httpcore's own pool, in linear time."""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, field

import httpcore
import httpx

from replicator.oci.pool import LinearConnectionPool, PooledTransport

ORIGINS = ("a", "b", "c")
SEEDS = 500


@dataclass
class FakeConnection:
    ident: str
    origin: str
    closed: bool = False
    expired: bool = False
    idle: bool = False
    available: bool = False

    def is_closed(self) -> bool:
        return self.closed

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return self.idle

    def is_available(self) -> bool:
        return self.available

    def can_handle_request(self, origin: str) -> bool:
        return origin == self.origin


@dataclass
class FakeUrl:
    origin: str


@dataclass
class FakeInner:
    url: FakeUrl


@dataclass
class FakeRequest:
    request: FakeInner
    connection: FakeConnection | None = None
    assigned: list[str] = field(default_factory=list)

    def is_queued(self) -> bool:
        return self.connection is None

    def assign_to_connection(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.assigned.append(connection.ident)


def _state(seed: int) -> tuple[int, int, list[FakeConnection], list[FakeRequest]]:
    rng = random.Random(seed)
    max_connections = rng.randint(1, 8)
    keepalive = rng.randint(0, max_connections)
    connections = []
    for i in range(rng.randint(0, max_connections + 2)):
        idle = rng.random() < 0.5
        connections.append(
            FakeConnection(
                f"c{i}",
                rng.choice(ORIGINS),
                closed=rng.random() < 0.15,
                expired=idle and rng.random() < 0.2,
                idle=idle,
                available=idle and rng.random() < 0.8,
            )
        )
    requests = [
        FakeRequest(FakeInner(FakeUrl(rng.choice(ORIGINS))))
        if rng.random() < 0.7
        else FakeRequest(
            FakeInner(FakeUrl("a")), connection=connections[0] if connections else None
        )
        for _ in range(rng.randint(0, 6))
    ]
    return max_connections, keepalive, connections, requests


def _run(cls: type[httpcore.ConnectionPool], seed: int) -> tuple[object, ...]:
    max_connections, keepalive, connections, requests = _state(seed)
    pool = cls(max_connections=max_connections, max_keepalive_connections=keepalive)
    created: list[str] = []

    def create_connection(origin: str) -> FakeConnection:
        created.append(f"new{len(created)}")
        return FakeConnection(created[-1], origin)

    pool.create_connection = create_connection  # type: ignore[assignment,method-assign]
    pool._connections = connections  # type: ignore[assignment]
    pool._requests = requests  # type: ignore[assignment]
    closed = pool._assign_requests_to_connections()
    return (
        [c.ident for c in closed],  # type: ignore[attr-defined]
        [c.ident for c in pool._connections],  # type: ignore[attr-defined]
        [r.assigned for r in requests],
        created,
    )


def test_the_same_decisions_as_httpcore() -> None:
    for seed in range(SEEDS):
        ours, upstream = _run(LinearConnectionPool, seed), _run(httpcore.ConnectionPool, seed)
        assert ours == upstream, f"seed {seed}"


def test_the_states_cover_every_branch() -> None:
    """The random states reach reuse, new connections, replacing an idle one and eviction."""
    outcomes = [_run(httpcore.ConnectionPool, seed) for seed in range(SEEDS)]
    assert any(any("new" not in a for r in o[2] for a in r) for o in outcomes)  # reuse
    assert any(o[3] for o in outcomes)  # a new connection
    assert any(o[0] and o[3] for o in outcomes)  # closed something and created
    assert any(o[0] and not o[3] for o in outcomes)  # eviction or expiry alone


def test_it_overrides_the_method_httpcore_calls() -> None:
    """If httpcore renames or reshapes the method, the override would silently do nothing."""
    upstream = httpcore.ConnectionPool._assign_requests_to_connections
    ours = LinearConnectionPool._assign_requests_to_connections
    assert inspect.signature(upstream).parameters == inspect.signature(ours).parameters
    assert "_assign_requests_to_connections" in inspect.getsource(
        httpcore.ConnectionPool.handle_request
    )


def test_the_transport_runs_on_the_linear_pool() -> None:
    transport = PooledTransport(limits=httpx.Limits(max_connections=5))
    pool = transport._pool
    assert type(pool) is LinearConnectionPool
    assert (pool._max_connections, pool._max_keepalive_connections) == (5, 5)
    transport.close()
