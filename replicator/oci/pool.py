"""The HTTP transport: httpx's own, with a connection pool whose bookkeeping is linear.

httpcore 1.0's ``ConnectionPool._assign_requests_to_connections`` runs twice per request
and, for every idle connection, counts the pool again (``len([c.is_idle() for c in
connections])``): quadratic in the pool's size. With the 16 to 32 keep-alive connections a
listing holds open (two registries, bounded concurrency on each), that bookkeeping was a
third of the replicator's CPU per manifest HEAD (bench/RESULTS.md, ``## diff``). Upstream:
encode/httpcore#1035 (open); pydantic/httpx2#974 made the same change in a fork.

``LinearConnectionPool`` makes the same decisions in the same order, one pass each:
closed connections dropped, expired ones closed, idle ones closed while the pool holds more
than ``max_keepalive_connections``; each queued request takes the first available
connection for its origin, else a new one while under ``max_connections``, else replaces
the first idle one. ``tests/unit/test_pool.py`` checks it against upstream's method on
random pool states, decision for decision.
"""

from __future__ import annotations

import httpcore
import httpx

__all__ = ["LinearConnectionPool", "PooledTransport"]


class LinearConnectionPool(httpcore.ConnectionPool):
    """``httpcore.ConnectionPool`` with upstream's assignment, minus the quadratic count."""

    def _assign_requests_to_connections(self) -> list[httpcore.ConnectionInterface]:
        closing: list[httpcore.ConnectionInterface] = []
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired() or (
                connection.is_idle() and len(self._connections) > self._max_keepalive_connections
            ):
                self._connections.remove(connection)
                closing.append(connection)

        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            available = next(
                (
                    connection
                    for connection in self._connections
                    if connection.can_handle_request(origin) and connection.is_available()
                ),
                None,
            )
            if available is not None:
                pool_request.assign_to_connection(available)
            elif len(self._connections) < self._max_connections:
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
            else:
                idle = next((c for c in self._connections if c.is_idle()), None)
                if idle is not None:
                    self._connections.remove(idle)
                    closing.append(idle)
                    connection = self.create_connection(origin)
                    self._connections.append(connection)
                    pool_request.assign_to_connection(connection)
        return closing


class PooledTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` (TLS, limits, timeouts, error mapping all its own) on a
    ``LinearConnectionPool``. Proxies from the environment keep httpx's own transports."""

    def __init__(self, *, verify: bool | str = True, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, limits=limits)
        if type(self._pool) is httpcore.ConnectionPool:  # no state of its own to carry over
            self._pool.__class__ = LinearConnectionPool
