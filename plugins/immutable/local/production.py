"""The local platform's production state per app and region: which color is live, which is kept
for rollback and until when, and who holds the right to change traffic.

Live color and shares come from the load balancer; versions and digests from the containers'
labels. This file adds what neither can hold: when the kept color may be retired, and the lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from immutable.config import PlatformConfig
from immutable.local.fleets import LocalFleets, Member

log = logging.getLogger(__name__)

LIVE_COLORS = ("blue", "green")
LEASE_STALE_S = 6 * 3600  # seconds after which a lease left by a crashed run may be taken over


class LeaseHeld(RuntimeError):
    pass


def other_color(color: str | None) -> str:
    return "green" if color == "blue" else "blue"


class LocalProduction:
    def __init__(self, platform: PlatformConfig, state_dir: Path) -> None:
        self.platform = platform
        self.state_dir = state_dir
        self.fleets = LocalFleets(platform, state_dir)

    def lb(self, region: str) -> Any:
        from immutable.local.loadbalancer import LoadBalancer

        return LoadBalancer(self.platform.region(region), self.state_dir)

    # --- state file -----------------------------------------------------------------------

    def _path(self, app: str, region: str) -> Path:
        return self.state_dir / "production" / region / f"{app}.json"

    @contextlib.contextmanager
    def _locked(self, app: str, region: str) -> Generator[dict[str, Any]]:
        """Read-modify-write of one app/region record under an exclusive file lock."""
        path = self._path(app, region)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = json.loads(path.read_text()) if path.exists() else {}
            yield record
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
            tmp.replace(path)

    def record(self, app: str, region: str) -> dict[str, Any]:
        path = self._path(app, region)
        return json.loads(path.read_text()) if path.exists() else {}

    # --- what runs ------------------------------------------------------------------------

    def live(self, app: str, region: str) -> dict[str, Any] | None:
        """The blue/green color taking traffic (the larger share), with its version and digest."""
        shares = self.lb(region).shares(app)
        candidates = [(shares.get(c, 0.0), c) for c in LIVE_COLORS if shares.get(c, 0.0) > 0]
        if not candidates:
            return None
        _, color = max(candidates)
        members = self.fleets.members(app, region, color)
        if not members:
            return None
        return {"color": color, "version": members[0].version, "digest": members[0].digest, "size": len(members)}

    def kept(self, app: str, region: str) -> dict[str, Any] | None:
        """The previous color, kept without traffic for a fast rollback, if it still runs."""
        previous = self.record(app, region).get("previous")
        if not previous:
            return None
        members = self.fleets.members(app, region, previous["color"])
        if not members or members[0].digest != previous["digest"]:
            return None
        return dict(previous)

    def members(self, app: str, region: str, color: str) -> list[Member]:
        return self.fleets.members(app, region, color)

    # --- traffic --------------------------------------------------------------------------

    def set_shares(self, app: str, region: str, shares: dict[str, float]) -> None:
        self.lb(region).set_shares(app, shares)
        log.info("%s %s: traffic now %s", app, region, shares)

    def shares(self, app: str, region: str) -> dict[str, float]:
        return dict(self.lb(region).shares(app))

    def note_flip(
        self,
        app: str,
        region: str,
        *,
        live: dict[str, Any],
        previous: dict[str, Any] | None,
        rollback_window_s: float,
        run_id: str,
    ) -> None:
        with self._locked(app, region) as record:
            # What a flip back must restore: the record as it was before this flip.
            record["before_flip"] = {k: record.get(k) for k in ("live", "previous", "previous_release")}
            record["live"] = live | {"since": time.time(), "run_id": run_id}
            record["previous"] = previous | {"retire_after": time.time() + rollback_window_s} if previous else None
            if previous:
                # Outlives the kept fleet: a rollback past the window redeploys this digest.
                record["previous_release"] = previous

    def note_flip_back(self, app: str, region: str, *, live: dict[str, Any]) -> None:
        """The failed flip is undone: the kept color (if it still runs) and the earlier release return."""
        with self._locked(app, region) as record:
            before = record.pop("before_flip", None) or {}
            record["live"] = live | {"since": time.time(), "run_id": "flip-back"}
            record["previous"] = before.get("previous")
            record["previous_release"] = before.get("previous_release")

    def retire_expired(self, app: str, region: str, now: float) -> list[str]:
        """Remove the kept color once its rollback window is over (never the live one)."""
        with self._locked(app, region) as record:
            previous = record.get("previous")
            if not previous or previous.get("retire_after", 0) > now:
                return []
            live = self.live(app, region)
            if live and live["color"] == previous["color"]:
                record["previous"] = None
                return []
            removed = self.fleets.destroy(app, region, previous["color"])
            record["previous"] = None
            return removed

    # --- lease: one release or rollback changes an app's traffic in a region at a time ------

    def acquire(self, app: str, region: str, holder: str) -> None:
        with self._locked(app, region) as record:
            lease = record.get("lease")
            if lease and lease["holder"] != holder and time.time() - lease["since"] < LEASE_STALE_S:
                raise LeaseHeld(
                    f"{lease['holder']} is changing {app}'s traffic in {region} (since "
                    f"{time.strftime('%H:%M:%S', time.gmtime(lease['since']))} UTC); only one release or rollback "
                    "may do so at a time. Wait for it to finish, then run this again."
                )
            record["lease"] = {
                "holder": holder,
                "since": lease["since"] if lease and lease["holder"] == holder else time.time(),
            }

    def release(self, app: str, region: str, holder: str) -> bool:
        with self._locked(app, region) as record:
            lease = record.get("lease")
            if lease and lease["holder"] == holder:
                record["lease"] = None
                return True
            return False

    def metrics_backend(self) -> dict[str, str]:
        return {"kind": "prometheus", "url": f"http://127.0.0.1:{self.platform.local.prometheus_port}"}
