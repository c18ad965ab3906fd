"""What the OpenTelemetry SDK's in-memory metric reader collected, read the same way by
every test that checks a counter."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.util.types import AttributeValue


def counted(
    reader: InMemoryMetricReader, name: str, *keys: str
) -> list[tuple[AttributeValue | int | float | None, ...]]:
    """For each point of the counter (or gauge) ``name``: the values of the attributes
    ``keys``, then the point's value."""
    data = reader.get_metrics_data()
    return [
        (*((dict(p.attributes or {})).get(key) for key in keys), p.value)
        for r in (data.resource_metrics if data else ())
        for s in r.scope_metrics
        for m in s.metrics
        if m.name == name
        for p in m.data.data_points
        if isinstance(p, NumberDataPoint)
    ]


def metric_names(reader: InMemoryMetricReader) -> set[str]:
    data = reader.get_metrics_data()
    return {
        m.name
        for r in (data.resource_metrics if data else ())
        for s in r.scope_metrics
        for m in s.metrics
    }
