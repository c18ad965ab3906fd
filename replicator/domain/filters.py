"""Include / exclude globs on ``repository:tag``. Pure.

``*`` matches within one path segment (no ``/``), ``**`` across segments, ``?`` one
character. A pattern without ``:`` matches the repository with any tag (``team/*`` is
``team/*:*``). Include empty means everything; exclude wins over include.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    if ":" not in pattern:
        pattern += ":**"
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/:]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/:]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def glob_match(pattern: str, repository: str, tag: str | None) -> bool:
    return bool(_compile(pattern).match(f"{repository}:{tag or ''}"))


@dataclass(frozen=True)
class Filters:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, repository: str, tag: str | None = None) -> bool:
        if self.include and not any(glob_match(p, repository, tag) for p in self.include):
            return False
        return not any(glob_match(p, repository, tag) for p in self.exclude)

    def reason(self, repository: str, tag: str | None = None) -> str | None:
        """Why ``repository:tag`` is filtered out, or None when it is allowed."""
        if self.include and not any(glob_match(p, repository, tag) for p in self.include):
            return f"matches no REPLICATOR_INCLUDE pattern ({', '.join(self.include)})"
        for pattern in self.exclude:
            if glob_match(pattern, repository, tag):
                return f"matches REPLICATOR_EXCLUDE pattern {pattern!r}"
        return None


def may_hold_allowed(filters: Filters, repository: str) -> bool:
    """False when no tag of ``repository`` can pass the filters, so it need not be listed."""
    if filters.include and not any(
        glob_match(_repo_part(p) + ":**", repository, "") for p in filters.include
    ):
        return False
    return not any(
        (p.partition(":")[2] if ":" in p else "**") in {"*", "**"} and glob_match(p, repository, "")
        for p in filters.exclude
    )


def _repo_part(pattern: str) -> str:
    return pattern.partition(":")[0]
