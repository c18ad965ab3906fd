"""acr-replicator: keeps a disaster-recovery container registry in step with its source."""

from __future__ import annotations

__version__ = "0.1.0"
