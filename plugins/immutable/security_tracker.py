"""Debian's security tracker data for one suite, as `cve_check` reads it: fetched from the tracker
and cached (only the suite's entries, a few MB instead of the whole file), the cache reused while
younger than `max_age_h`; where the tracker cannot be reached, the last copy fetched (its age said
in the log), else the recorded excerpt named in include/base/base.yaml."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutable.config import SecurityTracker

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 300.0  # the whole file is tens of MB


class TrackerUnavailable(RuntimeError):
    """No tracker data at all: not reachable, nothing cached, no excerpt."""


@dataclass(frozen=True)
class TrackerData:
    entries: dict[str, dict[str, Any]]  # source package -> CVE id -> {"releases": {suite: {...}}}
    source: str  # where the data came from, for the log and the Asset event
    age_s: float | None  # how old the fetched copy is; None for the recorded excerpt


def for_suite(tracker: dict[str, Any], suite: str) -> dict[str, dict[str, Any]]:
    """Only what concerns `suite`: every CVE of every source package, with that suite's release alone.
    Keys that are not package names (an excerpt's notes, starting with `_`) are left out. Pure."""
    kept: dict[str, dict[str, Any]] = {}
    for source, cves in tracker.items():
        if source.startswith("_") or not isinstance(cves, dict):
            continue
        kept[source] = {
            cve: {"releases": {suite: entry["releases"][suite]} if suite in entry.get("releases", {}) else {}}
            for cve, entry in cves.items()
            if isinstance(entry, dict)
        }
    return kept


def _cache_file(state_dir: Path, suite: str) -> Path:
    return state_dir / "security-tracker" / f"{suite}.json"


def _read_cache(path: Path) -> tuple[dict[str, Any], float] | None:
    try:
        cached = json.loads(path.read_text())
        return dict(cached["entries"]), float(cached["fetched_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fetch(url: str, suite: str, path: Path) -> dict[str, Any]:
    import httpx

    response = httpx.get(url, timeout=httpx.Timeout(FETCH_TIMEOUT_S, connect=10.0), follow_redirects=True)
    response.raise_for_status()
    entries = for_suite(response.json(), suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"url": url, "fetched_at": time.time(), "entries": entries}))
    partial.replace(path)
    return entries


def load(settings: SecurityTracker, suite: str, state_dir: Path, root: Path) -> TrackerData:
    """The suite's tracker data, from the freshest place that has it; says where in the log."""
    path = _cache_file(state_dir, suite)
    cached = _read_cache(path)
    if cached and time.time() - cached[1] < settings.max_age_h * 3600:
        age = time.time() - cached[1]
        log.info("security tracker: the copy fetched %.1f h ago (%s)", age / 3600, path)
        return TrackerData(cached[0], f"{settings.url} (cached)", age)
    failure = "no url configured"
    if settings.url:
        try:
            entries = _fetch(settings.url, suite, path)
            log.info("security tracker: fetched %s just now (%d source packages)", settings.url, len(entries))
            return TrackerData(entries, settings.url, 0.0)
        except Exception as exc:  # unreachable, refused or not JSON: an older copy may still answer
            failure = f"{type(exc).__name__}: {exc}"
    if cached:
        age = time.time() - cached[1]
        log.warning(
            "security tracker: %s could not be fetched (%s); using the copy fetched %.1f h ago",
            settings.url,
            failure,
            age / 3600,
        )
        return TrackerData(cached[0], f"{settings.url} (cached)", age)
    if settings.excerpt:
        excerpt = root / settings.excerpt
        entries = for_suite(json.loads(excerpt.read_text()), suite)
        cves = sum(len(c) for c in entries.values())
        log.warning(
            "security tracker: %s could not be fetched (%s) and nothing is cached; using the recorded excerpt "
            "%s (%d CVE ids: any other is unknown to it)",
            settings.url,
            failure,
            settings.excerpt,
            cves,
        )
        return TrackerData(entries, f"{settings.excerpt} (recorded excerpt)", None)
    raise TrackerUnavailable(
        f"the security tracker could not be fetched from {settings.url} ({failure}), nothing is cached under "
        f"{path.parent} and no excerpt is configured (security_tracker in include/base/base.yaml)"
    )
