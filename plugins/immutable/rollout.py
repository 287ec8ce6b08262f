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
