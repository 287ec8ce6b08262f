"""Monotonic base image versions: YYYY.MM.DD.N, N counting builds of that day from 1."""

from __future__ import annotations

import re
from datetime import date

VERSION_PATTERN = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})\.(\d+)$")


def parse_version(tag: str) -> tuple[int, int, int, int] | None:
    match = VERSION_PATTERN.match(tag)
    if not match:
        return None
    year, month, day, serial = (int(g) for g in match.groups())
    return (year, month, day, serial)


def next_version(existing_tags: list[str], day: date) -> str:
    """The next version after every existing one, dated `day`.

    Never goes backwards: if a tag from a later day exists (a clock moved back, a run
    re-executed with an old date), the new version continues after it.
    """
    versions = sorted(v for v in (parse_version(t) for t in existing_tags) if v is not None)
    today = (day.year, day.month, day.day)
    serial = 1
    if versions:
        latest = versions[-1]
        if latest[:3] > today:
            today, serial = latest[:3], latest[3] + 1
        elif latest[:3] == today:
            serial = latest[3] + 1
    return f"{today[0]:04d}.{today[1]:02d}.{today[2]:02d}.{serial}"


def latest_version(existing_tags: list[str]) -> str | None:
    parsed = [(v, t) for t in existing_tags if (v := parse_version(t)) is not None]
    return max(parsed)[1] if parsed else None
