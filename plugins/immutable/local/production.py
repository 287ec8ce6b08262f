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
from collections.abc import Generator
from pathlib import Path
from typing import Any

from immutable.config import PlatformConfig
from immutable.local.fleets import LocalFleets
from immutable.production_state import LEASE_STALE_S, LIVE_COLORS, LeaseHeld, ProductionState, other_color

log = logging.getLogger(__name__)

__all__ = ["LEASE_STALE_S", "LIVE_COLORS", "LeaseHeld", "LocalProduction", "other_color"]


class LocalProduction(ProductionState):
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

    # --- traffic --------------------------------------------------------------------------

    def set_shares(self, app: str, region: str, shares: dict[str, float]) -> None:
        self.lb(region).set_shares(app, shares)
        log.info("%s %s: traffic now %s", app, region, shares)

    def shares(self, app: str, region: str) -> dict[str, float]:
        return dict(self.lb(region).shares(app))
