"""What every platform's production keeps per app and region beyond what runs: the kept color and
until when, the earlier release, and the lease that lets one run at a time change traffic.

Which color is live and what it runs is read from the platform itself (the load balancer and the
fleets); a platform subclass says how, and where its small bookkeeping record is stored (a file
under a lock locally, an object with a conditional write on AWS).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from immutable.rollout import stop_cause

log = logging.getLogger(__name__)

LIVE_COLORS = ("blue", "green")
LEASE_STALE_S = 6 * 3600  # seconds after which a lease left by a crashed run may be taken over


class LeaseHeld(RuntimeError):
    pass


# Airflow run states in which a lease holder may still change traffic (anything else has ended).
RUN_STATES_ALIVE = ("queued", "running")


def lease_decision(lease: dict[str, Any] | None, holder: str, now: float, holder_state: str | None) -> tuple[str, str]:
    """Whether `holder` may take an app's lease in a region: ("take", why) or ("held", why).

    A lease is taken over only when nobody can still be acting under it: its run has ended (Airflow
    says so: a crashed run's teardown never released it), or it is older than LEASE_STALE_S. A run
    whose state cannot be read (None) is treated as alive: waiting is safe, two writers are not."""
    if not lease or lease.get("holder") == holder:
        return "take", "free" if not lease else "already ours"
    since = float(lease.get("since", 0))
    held_for_s = now - since
    whose = f"{lease['holder']}" + (f" of {lease['dag_id']}" if lease.get("dag_id") else "")
    when = f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(since))} UTC, {held_for_s / 60:.0f} min ago"
    if holder_state is not None and holder_state not in RUN_STATES_ALIVE:
        return "take", f"the lease of {whose} ({when}) was left by a run that has ended ({holder_state})"
    if held_for_s >= LEASE_STALE_S:
        return "take", f"the lease of {whose} ({when}) is older than {LEASE_STALE_S / 3600:.0f} h"
    return "held", f"{whose} ({holder_state or 'state unknown'}) holds it {when}"


def digests_named(record: dict[str, Any]) -> dict[str, str]:
    """Digest -> why, for every image a region's production record names: live, kept for rollback,
    the earlier release a rollback past its window redeploys, and the flip in progress's `before`."""
    named: dict[str, str] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("digest"), str):
                named.setdefault(value["digest"], where)
            for key, inner in value.items():
                walk(inner, f"{where} {key.replace('_', ' ')}".strip())

    for key in ("live", "previous", "previous_release", "before_flip"):
        walk(record.get(key), key.replace("_", " "))
    return named


def other_color(color: str | None) -> str:
    return "green" if color == "blue" else "blue"


class FleetMember(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def digest(self) -> str: ...


class ProductionState:
    """Record keeping shared by the platforms; subclasses set `fleets` and the storage hooks."""

    fleets: Any

    # --- hooks a platform provides ----------------------------------------------------------

    def _locked(self, app: str, region: str) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Read-modify-write of one app/region record, exclusive against other writers."""
        raise NotImplementedError

    def record(self, app: str, region: str) -> dict[str, Any]:
        raise NotImplementedError

    def shares(self, app: str, region: str) -> dict[str, float]:
        raise NotImplementedError

    def set_shares(self, app: str, region: str, shares: dict[str, float]) -> None:
        raise NotImplementedError

    # --- what runs ----------------------------------------------------------------------------

    def members(self, app: str, region: str, color: str) -> list[Any]:
        return list(self.fleets.members(app, region, color))

    def live(self, app: str, region: str) -> dict[str, Any] | None:
        """The blue/green color taking traffic (the larger share), with its version and digest."""
        shares = self.shares(app, region)
        candidates = [(shares.get(c, 0.0), c) for c in LIVE_COLORS if shares.get(c, 0.0) > 0]
        if not candidates:
            return None
        _, color = max(candidates)
        members = self.members(app, region, color)
        if not members:
            return None
        return {"color": color, "version": members[0].version, "digest": members[0].digest, "size": len(members)}

    def kept(self, app: str, region: str) -> dict[str, Any] | None:
        """The previous color, kept without traffic for a fast rollback, if it still runs."""
        previous = self.record(app, region).get("previous")
        if not previous:
            return None
        members = self.members(app, region, previous["color"])
        if not members or members[0].digest != previous["digest"]:
            return None
        return dict(previous)

    # --- flips --------------------------------------------------------------------------------

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
            removed: list[str] = self.fleets.destroy(app, region, previous["color"])
            record["previous"] = None
            return removed

    # --- a person's stop -------------------------------------------------------------------

    def request_stop(self, app: str, region: str, *, by: str, reason: str, at: float) -> None:
        """Every release of the app requested before `at` stops at its next look (see rollout.stop_cause)."""
        with self._locked(app, region) as record:
            record["stop_requested"] = {"by": by, "reason": reason, "at": at}

    def stop_requested(self, app: str, region: str, release_requested_at: float) -> str | None:
        return stop_cause(self.record(app, region).get("stop_requested"), release_requested_at)

    # --- lease: one release or rollback changes an app's traffic in a region at a time ------

    def acquire(
        self,
        app: str,
        region: str,
        holder: str,
        *,
        dag_id: str | None = None,
        run_state: Callable[[str, str], str | None] | None = None,
    ) -> None:
        """Take the app's lease in the region for the run `holder` (of `dag_id`). `run_state(dag_id,
        run_id)` tells whether another holder's run is still alive (see `lease_decision`)."""
        with self._locked(app, region) as record:
            lease = record.get("lease")
            state = None
            if lease and lease.get("holder") != holder and lease.get("dag_id") and run_state is not None:
                state = run_state(str(lease["dag_id"]), str(lease["holder"]))
            decision, why = lease_decision(lease, holder, time.time(), state)
            if decision == "held":
                raise LeaseHeld(
                    f"{lease['holder'] if lease else '?'} is changing {app}'s traffic in {region}: {why}. Only one "
                    "release or rollback may do so at a time. Wait for it to finish, then run this again; a lease "
                    "left by a run that has ended is taken over by the next run, or after "
                    f"{LEASE_STALE_S / 3600:.0f} h."
                )
            if lease and lease.get("holder") != holder:
                log.warning("%s %s: taking over the lease: %s", app, region, why)
            record["lease"] = {
                "holder": holder,
                "dag_id": dag_id,
                "since": lease["since"] if lease and lease.get("holder") == holder else time.time(),
            }

    def release(self, app: str, region: str, holder: str) -> bool:
        with self._locked(app, region) as record:
            lease = record.get("lease")
            if lease and lease["holder"] == holder:
                record["lease"] = None
                return True
            return False
