"""Cursors in the status table: where a rolling sweep stopped, so the next pass goes on.

One entity per sweep (partition ``_cursor``, row key the sweep's name, e.g.
``referrers|<target>``) in the status table, next to the job rows: the position (the key
of the last item the sweep finished, ``""`` at the start), how many full laps it made,
when the last pass ran, and what that pass counted. The table is created on first use
(``replicator.adapters.azure.provision``), as every status-table call does; a cursor never
written reads as the start. Storage failures leave as ``QueueUnavailableError``.
``TableCursors`` is the app's ``CursorStore`` port (``replicator.app.ports``,
``Runtime.cursors``): referrer drift and the verify sweep keep their place here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from replicator.adapters.azure.status import TableStatusStore

CURSOR_PARTITION = "_cursor"
MAX_POSITION_CHARS = 1024  # a repository (255) and a digest (135) fit many times over


@dataclass(frozen=True)
class Cursor:
    """Where one sweep stands."""

    name: str
    position: str = ""  # the last item the sweep finished; "" = at the start
    laps: int = 0  # full sweeps completed
    passed_at: datetime | None = None  # when the last pass ran (None: never)
    counts: Mapping[str, int] = field(default_factory=dict)  # what the last pass found

    def to_status(self) -> dict[str, object]:
        return {
            "position": self.position,
            "laps": self.laps,
            "passedAt": self.passed_at.isoformat() if self.passed_at else None,
            **dict(self.counts),
        }


@dataclass
class TableCursors:
    """Sweep cursors in the status table, through the status store's one table call
    (created on first use; storage failures as ``QueueUnavailableError``)."""

    store: TableStatusStore

    @classmethod
    def for_status(cls, store: TableStatusStore) -> TableCursors:
        return cls(store)

    def get(self, name: str) -> Cursor:
        """The cursor named ``name``; the start when none was written yet."""
        client = self.store.client
        try:
            entity = self.store.call("read", client.get_entity, CURSOR_PARTITION, name)
        except ResourceNotFoundError:
            return Cursor(name)
        return _cursor(name, entity)

    def put(self, cursor: Cursor) -> None:
        entity: dict[str, Any] = {
            "PartitionKey": CURSOR_PARTITION,
            "RowKey": cursor.name,
            "Position": cursor.position[:MAX_POSITION_CHARS],
            "Laps": cursor.laps,
            "Counts": json.dumps(dict(cursor.counts), sort_keys=True),
        }
        if cursor.passed_at is not None:
            entity["PassedAt"] = cursor.passed_at
        client = self.store.client
        self.store.call("write", client.upsert_entity, entity, mode=UpdateMode.REPLACE)

    def starting_with(self, prefix: str) -> list[Cursor]:
        """Every cursor whose name starts with ``prefix`` (``status`` shows them)."""
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        params = {"pk": CURSOR_PARTITION, "low": prefix, "high": prefix + "\uffff"}
        client = self.store.client
        rows = self.store.call(
            "query", lambda: list(client.query_entities(query, parameters=params))
        )
        return [_cursor(str(e["RowKey"]), e) for e in rows]


def _cursor(name: str, entity: Mapping[str, Any]) -> Cursor:
    try:
        counts = json.loads(entity.get("Counts") or "{}")
    except ValueError:
        counts = {}
    passed = entity.get("PassedAt")
    return Cursor(
        name,
        str(entity.get("Position") or ""),
        int(entity.get("Laps") or 0),
        passed if isinstance(passed, datetime) else None,
        {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
        if isinstance(counts, dict)
        else {},
    )
