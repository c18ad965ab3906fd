from __future__ import annotations

from replicator.cli import main

raise SystemExit(main())
