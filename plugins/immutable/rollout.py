"""The rollout order planner: which regions flip in which step. Pure; the DAG wires what it returns."""

from __future__ import annotations

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


# --- traffic decisions within a region: pure, called by pipelines/production.py -------------


def canary_shares(live_color: str, share_percent: float) -> dict[str, float]:
    """Canary and baseline take the same share each; production keeps the rest."""
    if not 0 < share_percent <= 50:
        raise ValueError(f"a canary share must be in (0, 50] percent, got {share_percent}")
    return {live_color: 100 - 2 * share_percent, "canary": share_percent, "baseline": share_percent}


def flip_steps(new_color: str, previous_color: str | None, weight_steps: list[float]) -> list[dict[str, float]]:
    """The load balancer's shares at each step of a blue/green flip; the last step gives the new color all."""
    return [
        {new_color: weight} | ({previous_color: 100 - weight} if previous_color and weight < 100 else {})
        for weight in weight_steps
    ]


@dataclass(frozen=True)
class RegionState:
    """What a region runs for an app, as read from the platform, for the rollback planner."""

    live_color: str | None
    live_digest: str | None
    live_run_id: str | None  # the run that flipped the live color in, per the production record
    fleet_digests: dict[str, str]  # color -> digest of each fleet that exists (blue, green, canary, baseline)


@dataclass(frozen=True)
class RollbackAction:
    flip_back: bool  # this run flipped the region: traffic goes back to the kept color
    remove: tuple[str, ...]  # fleets of this release that exist but take no traffic, to remove


def plan_rollback(state: RegionState, *, digest: str, run_id: str) -> RollbackAction:
    """After a failed release: a region this run flipped goes back; elsewhere only what this run
    launched and never took traffic goes (never the live color, never another release's fleet)."""
    if state.live_digest == digest and state.live_run_id == run_id:
        return RollbackAction(flip_back=True, remove=())
    remove = tuple(
        color for color in ("blue", "green") if state.fleet_digests.get(color) == digest and state.live_color != color
    )
    remove += tuple(color for color in ("canary", "baseline") if color in state.fleet_digests)
    return RollbackAction(flip_back=False, remove=remove)
