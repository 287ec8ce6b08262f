"""The rollout order planner: which regions flip in which step. Pure; the DAG wires what it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RolloutStep:
    name: str  # the task group's id
    regions: tuple[str, ...]
    synchronized: bool  # all regions of the step flip in one task, after all are launched and healthy
    approval_before: bool  # a human approves before this step starts


def plan_rollout(waves: list[list[str]], *, synchronized: bool, approval: bool) -> list[RolloutStep]:
    """Waves: the pilot (first wave) alone, then each wave's regions in parallel, one wave after the
    other; approval, when asked, sits between the pilot and the second wave. Synchronized: after the
    canary, every region is launched and checked, then all flip at once (approval before that)."""
    if not waves or not waves[0]:
        raise ValueError("a rollout needs at least a pilot region")
    if synchronized:
        regions = tuple(region for wave in waves for region in wave)
        return [RolloutStep("all_regions", regions, synchronized=True, approval_before=approval)]
    return [
        RolloutStep(f"wave_{number}", tuple(wave), synchronized=False, approval_before=approval and number == 2)
        for number, wave in enumerate(waves, start=1)
        if wave
    ]


# --- a person's stop -------------------------------------------------------------------------


def stop_cause(request: dict[str, object] | None, release_requested_at: float) -> str | None:
    """A stop request (stop_<app>) applies to every release of the app requested before it, and to
    none requested after: the cause sentence of the release's failure, or None to carry on."""
    if not request or float(str(request.get("at", 0))) < release_requested_at:
        return None
    who = request.get("by") or "an unnamed user"
    return f"Stopped by {who}: {request.get('reason') or 'no reason given'}"


def runs_to_make_safe(
    leases: Mapping[str, Mapping[str, object] | None], release_dag_id: str, marked_failed_run: str | None
) -> dict[str, str]:
    """Per region, the release run a stop must see ended and undone: the one holding the region's lease
    now, or, where nobody does, the run marked failed by hand (its teardown may have freed its leases
    before the stop came). A region another DAG (a rollback) holds is left to it."""
    runs: dict[str, str] = {}
    for region, lease in leases.items():
        if lease and lease.get("dag_id") == release_dag_id:
            runs[region] = str(lease["holder"])
        elif not lease and marked_failed_run:
            runs[region] = marked_failed_run
    return runs


# --- traffic decisions within a region: pure, called by pipelines/production.py -------------


def canary_shares(live_color: str, share_percent: float) -> dict[str, float]:
    """Canary and baseline take the same share each; production keeps the rest."""
    if not 0 < share_percent <= 50:
        raise ValueError(f"a canary share must be in (0, 50] percent, got {share_percent}")
    return {live_color: 100 - 2 * share_percent, "canary": share_percent, "baseline": share_percent}


def flip_steps(new_color: str, previous_color: str | None, weight_steps: list[float]) -> list[dict[str, float]]:
    """The load balancer's shares at each step of a blue/green flip; the last step gives the new color all.
    With no previous color (a first release) there is nothing to share with: one step, all traffic."""
    if previous_color is None:
        return [{new_color: 100.0}]
    return [{new_color: weight} | ({previous_color: 100 - weight} if weight < 100 else {}) for weight in weight_steps]


def lockstep_rounds(steps_by_region: dict[str, list[dict[str, float]]]) -> list[dict[str, dict[str, float]]]:
    """A synchronized flip's rounds: in each, every region named gets its next shares at once. Regions
    with fewer steps (a first release there flips in one) join late, so every region takes its last
    step, all traffic on the new color, in the same final round."""
    if not steps_by_region:
        return []
    empty = sorted(region for region, steps in steps_by_region.items() if not steps)
    if empty:
        raise ValueError(f"regions without a flip step: {empty}")
    count = max(len(steps) for steps in steps_by_region.values())
    rounds: list[dict[str, dict[str, float]]] = [{} for _ in range(count)]
    for region, steps in steps_by_region.items():
        for offset, shares in enumerate(steps, start=count - len(steps)):
            rounds[offset][region] = shares
    return rounds


@dataclass(frozen=True)
class RegionState:
    """What a region runs for an app, as read from the platform, for the rollback planner."""

    shares: dict[str, float]  # color -> share of the region's traffic, from the load balancer
    fleet_digests: dict[str, str]  # color -> digest of each fleet that exists (blue, green, canary, baseline)
    recorded_live: dict[str, str] | None  # the record's live color: {"color", "digest", "run_id"}
    recorded_previous: dict[str, str] | None  # the record's kept color: {"color", "digest"}
    lease_holder: str | None  # the run that holds the app's lease in the region


@dataclass(frozen=True)
class RollbackAction:
    back_to: str | None  # the color that takes all the traffic again; None: leave the traffic as it is
    note_flip_back: bool  # the record named this run's color live: restore the record too
    remove: tuple[str, ...]  # fleets of this release (and canaries) to remove
    why: str
    leaves_region: bool = False  # no earlier release runs here: removing this run's fleets takes the app out


def plan_rollback(state: RegionState, *, digest: str, run_id: str) -> RollbackAction:
    """After a failed release, per region: traffic back to what was live before this run, and what this
    run launched removed; never the live color of another run, never another release's fleet.

    Three cases: this run's flip completed (the record names its color live): back to the kept color;
    the flip was interrupted halfway (this run holds the lease and its color takes some traffic, but
    the record still names the old color): back to the recorded live color; this run never moved
    traffic here: only its idle fleets go."""
    ours = [c for c in ("blue", "green") if state.fleet_digests.get(c) == digest]
    canaries = tuple(c for c in ("canary", "baseline") if c in state.fleet_digests)
    serving = [c for c in ours if state.shares.get(c, 0) > 0]
    live = state.recorded_live or {}
    completed = bool(serving) and live.get("run_id") == run_id and live.get("color") in serving
    interrupted = bool(serving) and not completed and state.lease_holder == run_id
    if not completed and not interrupted:
        idle = tuple(c for c in ours if c not in serving)
        return RollbackAction(None, False, idle + canaries, "this run moved no traffic here")
    target = (state.recorded_previous if completed else state.recorded_live) or {}
    color = target.get("color")
    if color and color not in ours and state.fleet_digests.get(color) == target.get("digest"):
        how = "its flip completed" if completed else "its flip was interrupted halfway"
        return RollbackAction(color, completed, tuple(ours) + canaries, f"{how}: back to {color}")
    # No earlier release still runs here (a first release): the app leaves the region, as it was before.
    return RollbackAction(None, False, tuple(ours) + canaries, "no earlier release runs here", leaves_region=True)
