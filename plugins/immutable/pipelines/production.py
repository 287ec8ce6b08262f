"""Production steps of release_<app> and rollback_<app>: canary, blue/green flips, rollback.

Every step looks before it acts (what is live, what is kept, which fleet exists), so a retry or
a resumed run never makes a second fleet or a second flip. Only the holder of an app's lease in
a region changes its traffic there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from threading import Barrier
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from immutable.app_spec import AppSpec, app_spec
from immutable.config import ConfigError
from immutable.metric_timing import (
    CanaryTiming,
    GateTimingError,
    ThresholdTiming,
    canary_timing,
    duration_s,
    threshold_timing,
)
from immutable.payloads import Flipped, Launched, PendingLaunch
from immutable.platforms import platform_for
from immutable.production_state import digests_named
from immutable.revocation import deployable
from immutable.rollout import RegionState, canary_shares, flip_steps, lockstep_rounds, plan_rollback, runs_to_make_safe

if TYPE_CHECKING:
    from immutable.platforms.interface import Platform
    from immutable.production_state import ProductionState

log = logging.getLogger(__name__)


class ProductionError(RuntimeError):
    pass


class ReleaseStopped(AirflowFailException):
    """A person stopped the release (stop_<app>): never retried; the rollback task undoes the run."""


def requested_at(plan: dict[str, Any]) -> float:
    """When the release was asked for (its run's run_after): a stop applies to releases asked before it."""
    return datetime.fromisoformat(str(plan["created"])).timestamp()


def refuse_if_stopped(production: ProductionState, plan: dict[str, Any], region: str) -> None:
    """Before each change to a region's production: has a person stopped this release?"""
    if "created" not in plan:  # a rollback's steps: a stop is about releases
        return
    cause = production.stop_requested(plan["app"], region, requested_at(plan))
    if cause:
        raise ReleaseStopped(
            f"{cause}. The release of {plan['app']} {plan['version']} stops before it changes {region}; the rollback "
            "task sends every region this run flipped back and removes its new fleets."
        )


def _context(app: str) -> tuple[Platform, AppSpec, ProductionState]:
    platform = platform_for()
    return platform, spec_for(platform, app), platform.production


def run_state(dag_id: str, run_id: str) -> str | None:
    """The Airflow state of another run (to know whether its lease is still used), or None if it cannot
    be read (outside a task, or a run Airflow no longer knows): the lease then stands."""
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        state = RuntimeTaskInstance.get_dagrun_state(dag_id, run_id)
        # The Task SDK hands back its own DagRunState enum, whose str() is "DagRunState.FAILED".
        return str(getattr(state, "value", state))
    except Exception as exc:
        log.info("could not read the state of %s %s: %s", dag_id, run_id, exc)
        return None


def spec_for(platform: Platform, app: str) -> AppSpec:
    """The app's spec with the platform's timings, checked to have a query for every gate metric and
    gate windows that can hold the metrics backend's points."""
    spec = app_spec(app)
    spec.check_metrics_for(platform.config.platform, platform.metrics.query_field)
    timed = spec.for_platform(platform.config)
    try:
        canary_timing_for(timed, platform)
        threshold_timing_for(timed, platform)
    except GateTimingError as exc:
        raise ConfigError(f"app '{app}' on the {platform.config.platform} platform: {exc}") from exc
    return timed


def canary_timing_for(spec: AppSpec, platform: Platform) -> CanaryTiming:
    """The canary gate's step, delay and samples on this platform's metrics backend."""
    settings = spec.canary
    return canary_timing(
        platform.metrics.timing(),
        step_s=settings.step_s,
        interval_s=settings.interval_s,
        min_samples=settings.min_samples,
        confidence=settings.confidence,
    )


def threshold_timing_for(spec: AppSpec, platform: Platform) -> ThresholdTiming:
    """The post-flip gate's step, delay and look-back on this platform's metrics backend."""
    return threshold_timing(
        platform.metrics.timing(),
        step_s=spec.bluegreen.post_flip_step_s,
        window_s=spec.bluegreen.post_flip_window_s,
        rate_window_s=duration_s(spec.canary.rate_window),
    )


def live_version(app: str, region: str) -> str | None:
    """The version taking traffic in `region`, read from the platform, or None."""
    _, _, production = _context(app)
    live = production.live(app, region)
    return str(live["version"]) if live else None


def retire_expired(app: str, regions: list[str], releasing: str | None = None) -> dict[str, list[str]]:
    """Retire colors kept past their rollback window; never blocks on a window still open. Then old
    images go, never the one `releasing` (the digest this run takes out) nor one a record names."""
    from datetime import UTC, datetime

    from immutable.pipelines.release import retain_images

    _, _, production = _context(app)
    now = time.time()
    retired = {region: production.retire_expired(app, region, now) for region in regions}
    log.info("retired old colors: %s", retired)
    # Then old images nothing runs any more (aws: AMIs and snapshots past the retention policy).
    # Never an image a record names: a rollback past its window redeploys the earlier release's.
    in_records = {digest for region in regions for digest in digests_named(production.record(app, region))}
    protect = sorted(in_records | ({releasing} if releasing else set()))
    retained = retain_images(app, datetime.fromtimestamp(now, UTC), protect=protect)
    if retained:
        log.info("image retention: %s", retained)
    return retired


# --- canary ---------------------------------------------------------------------------------


def prepare_canary(plan: dict[str, Any], baked: dict[str, Any], run_id: str, *, wait: bool = True) -> dict[str, Any]:
    """Launch the canary (new image) and a fresh baseline (production image) and give each a share.

    With `wait=False` the fleets are only started: the result names them under `launching`, the
    caller waits for them (`pending_launch`) and then gives the shares (`open_canary`)."""
    platform, spec, production = _context(plan["app"])
    pilot = plan["waves"][0][0]
    refuse_if_stopped(production, plan, pilot)
    production.acquire(spec.name, pilot, run_id, dag_id=f"release_{spec.name}", run_state=run_state)
    live = production.live(spec.name, pilot)
    base = {"region": pilot, "canary_version": plan["version"], "canary_digest": baked["digest"]}
    if live is None:
        reason = f"{spec.name} has nothing in production in {pilot} yet, so there is no baseline to compare with"
        return base | {"skipped": True, "reason": reason}
    if live["digest"] == baked["digest"]:
        return base | {"skipped": True, "reason": f"{baked['digest']} is already live in {pilot}"}
    settings = spec.canary
    deployable(platform, pilot, spec.repository, baked["digest"])
    platform.images.verify_in(pilot, spec.repository, live["digest"])  # the baseline may be revoked: it is replaced
    launching = []
    for color, digest, version in (
        ("baseline", live["digest"], live["version"]),
        ("canary", baked["digest"], plan["version"]),
    ):
        started_at = time.time()
        production.fleets.launch(
            spec=spec,
            region=pilot,
            color=color,
            image=platform.images.uri(pilot, spec.repository, digest),
            digest=digest,
            version=version,
            size=settings.size,
            wait=wait,
        )
        launching.append(PendingLaunch(region=pilot, color=color, size=settings.size, started_at=started_at).dump())
    prepared = base | {
        "skipped": False,
        "live_color": live["color"],
        "baseline_version": live["version"],
        "baseline_digest": live["digest"],
        "share_percent": settings.traffic_percent,
    }
    return open_canary(plan["app"], prepared) if wait else prepared | {"launching": launching}


def open_canary(app: str, prepared: dict[str, Any]) -> dict[str, Any]:
    """Once canary and baseline are healthy: each takes its share of the pilot's traffic."""
    _, spec, production = _context(app)
    production.set_shares(
        spec.name, prepared["region"], canary_shares(prepared["live_color"], prepared["share_percent"])
    )
    return {k: v for k, v in prepared.items() if k != "launching"}


def pending_launch(app: str, launch: dict[str, Any]) -> tuple[Any, float] | None:
    """What a fleet started with `wait=False` still waits for: None once it is healthy, else the
    platform's trigger and its timeout. A launch that failed or timed out is removed and raised."""
    _, spec, production = _context(app)
    pending = PendingLaunch.of(launch)
    waiter: tuple[Any, float] | None = production.fleets.pending_launch(
        spec=spec, region=pending.region, color=pending.color, size=pending.size, started_at=pending.started_at
    )
    return waiter


def end_canary(app: str, pilot: str) -> dict[str, Any]:
    """Teardown: production takes all the pilot's traffic again; canary and baseline fleets go."""
    _, _, production = _context(app)
    live = production.live(app, pilot)
    if live is not None:
        production.set_shares(app, pilot, {live["color"]: 100})
    removed = production.fleets.destroy(app, pilot, "canary") + production.fleets.destroy(app, pilot, "baseline")
    return {"region": pilot, "live": live, "removed": removed}


# --- blue/green -----------------------------------------------------------------------------


def launch_new_color(
    plan: dict[str, Any], baked: dict[str, Any], region: str, run_id: str, *, dag_id: str = "", wait: bool = True
) -> dict[str, Any]:
    """Start the new color at full size on the new digest and check its health, without traffic.

    With `wait=False` the result names the fleet under `launching`: the caller waits for it
    (`pending_launch`) before anything flips to it."""
    from immutable.production_state import other_color

    platform, spec, production = _context(plan["app"])
    refuse_if_stopped(production, plan, region)
    deployable(platform, region, spec.repository, baked["digest"])  # before the lock: a refusal holds nothing
    production.acquire(spec.name, region, run_id, dag_id=dag_id or f"release_{spec.name}", run_state=run_state)
    live = production.live(spec.name, region)
    result = {"region": region, "version": plan["version"], "digest": baked["digest"], "previous": live}
    if live is not None and live["digest"] == baked["digest"]:
        return Launched(**result, color=live["color"], already_live=True).dump()
    color = other_color(live["color"] if live else None)
    stale = production.members(spec.name, region, color)
    if stale and stale[0].digest != baked["digest"]:
        log.info(
            "%s %s: replacing the kept %s fleet (%s) with the new release", spec.name, region, color, stale[0].version
        )
        production.fleets.destroy(spec.name, region, color)
    started_at = time.time()
    production.fleets.launch(
        spec=spec,
        region=region,
        color=color,
        image=platform.images.uri(region, spec.repository, baked["digest"]),
        digest=baked["digest"],
        version=plan["version"],
        size=spec.bluegreen.size,
        wait=wait,
    )
    launched = Launched(**result, color=color, already_live=False).dump()
    if wait:
        return launched
    return launched | {
        "launching": [PendingLaunch(region=region, color=color, size=spec.bluegreen.size, started_at=started_at).dump()]
    }


def start_flip(plan: dict[str, Any], launched: dict[str, Any], run_id: str) -> dict[str, Any]:
    """A flip of the region's traffic to the new color, not begun: `advance_flip` takes its steps."""
    return {"plan": plan, "launched": launched, "run_id": run_id, "next_step": 0, "started_at": time.time()}


def advance_flip(work: dict[str, Any]) -> tuple[Any, float] | None:
    """Take the flip's steps (`work` records how far it got). Between two steps: the spec's pause,
    then the new color's health, which the platform judges: healthy, the next step is taken here;
    not yet (aws: a target not healthy), the platform's trigger and its timeout are returned, for
    the caller to wait on before it calls this again. None once the last step is taken."""
    _, spec, production = _context(work["plan"]["app"])
    launch = Launched.of(work["launched"])
    if launch.already_live:
        return None
    steps = _steps(spec, launch)
    while work["next_step"] < len(steps):
        if work["next_step"] > 0:
            if not work.get("paused"):
                time.sleep(spec.bluegreen.step_pause_s)
                work["paused"] = True
            members = production.members(spec.name, launch.region, launch.color)
            since = work.setdefault("health_wait_since", time.time())
            waiter: tuple[Any, float] | None = production.fleets.pending_healthy(spec, members, since=since)
            if waiter is not None:
                return waiter
        refuse_if_stopped(production, work["plan"], launch.region)
        production.set_shares(spec.name, launch.region, steps[work["next_step"]])
        work.update(next_step=work["next_step"] + 1, paused=False)
        work.pop("health_wait_since", None)
    return None


def finish_flip(work: dict[str, Any]) -> dict[str, Any]:
    """Once `advance_flip` took the last step: the flip recorded (the old color stays, idle)."""
    _, spec, production = _context(work["plan"]["app"])
    launch = Launched.of(work["launched"])
    if launch.already_live:
        return Flipped(**_flip_fields(launch), flipped=False).dump()
    _note_flip(production, spec, launch, work["run_id"])
    flip_s = time.time() - work["started_at"]
    log.info("%s %s: flipped to %s (%s) in %.1fs", spec.name, launch.region, launch.color, launch.version, flip_s)
    return Flipped(**_flip_fields(launch), flipped=True, flip_s=flip_s).dump()


HEALTH_POLL_S = 2.0  # seconds between looks at the new color's health where no triggerer waits


def flip(plan: dict[str, Any], launched: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Move the region's traffic to the new color, in the spec's steps, waiting here between them
    (for callers outside a task; the `flip` task waits in the triggerer: `FlipOperator`)."""
    work = start_flip(plan, launched, run_id)
    while advance_flip(work) is not None:
        time.sleep(HEALTH_POLL_S)
    return finish_flip(work)


def start_flip_all(plan: dict[str, Any], launched: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    """A synchronized flip of every region, not begun: `advance_flip_all` takes its rounds."""
    _, _, production = _context(plan["app"])
    for one in launched:  # each region's client made here, one at a time, before the rounds' threads
        launch = Launched.of(one)
        production.shares(plan["app"], launch.region)
        refuse_if_stopped(production, plan, launch.region)
    return {
        "plan": plan,
        "launched": launched,
        "run_id": run_id,
        "next_round": 0,
        "reached": {},
        "started_at": time.time(),
    }


def advance_flip_all(work: dict[str, Any]) -> tuple[Any, float] | None:
    """Every region's traffic moves to its new color in lockstep: each round's shares set in all
    regions at once (`run_in_lockstep`), then the spec's pause and every new color's health (as
    `advance_flip`: a platform's wait returned for the caller, then this called again), then the
    next round; all reach the new color alone in the same round. None once the last round is set.
    A region that fails stops the flip: the release's rollback task then sends every region back,
    flipped or not."""
    _, spec, production = _context(work["plan"]["app"])
    moving = {launch.region: launch for launch in map(Launched.of, work["launched"]) if not launch.already_live}
    rounds = lockstep_rounds({region: _steps(spec, launch) for region, launch in moving.items()})
    while work["next_round"] < len(rounds):
        if work["next_round"] > 0:
            if not work.get("paused"):
                time.sleep(spec.bluegreen.step_pause_s)
                work["paused"] = True
            since = work.setdefault("health_wait_since", time.time())
            for region, launch in moving.items():
                refuse_if_stopped(production, work["plan"], region)
                members = production.members(spec.name, region, launch.color)
                waiter: tuple[Any, float] | None = production.fleets.pending_healthy(spec, members, since=since)
                if waiter is not None:
                    return waiter
        number = work["next_round"]
        try:
            reached = run_in_lockstep(
                [rounds[number]],
                lambda region, shares: production.set_shares(spec.name, region, shares),
                pause_s=0.0,
                first_step=number + 1,
                steps=len(rounds),
            )
        except LockstepError as exc:
            raise ProductionError(
                f"{exc} (the synchronized flip of {spec.name}); the rollback task sends every region back to the "
                "color live before"
            ) from exc
        work["reached"].update(reached)
        work.update(next_round=number + 1, paused=False)
        work.pop("health_wait_since", None)
    return None


def finish_flip_all(work: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """Once `advance_flip_all` set the last round: the flips recorded. Returns the flips and the
    skew: the seconds between the first and the last region reaching 100%."""
    _, spec, production = _context(work["plan"]["app"])
    launches = [Launched.of(one) for one in work["launched"]]
    moving = [launch for launch in launches if not launch.already_live]
    for launch in moving:
        _note_flip(production, spec, launch, work["run_id"])
    reached = work["reached"]
    skew_s = max(reached.values()) - min(reached.values()) if reached else 0.0
    flip_s = time.time() - work["started_at"]
    log.info(
        "%s: %d region(s) flipped together in %.1fs; the first and the last reached 100%% %.3fs apart",
        spec.name,
        len(moving),
        flip_s,
        skew_s,
    )
    flipped = {launch.region for launch in moving}
    flips = [Flipped(**_flip_fields(one), flipped=one.region in flipped, flip_s=flip_s).dump() for one in launches]
    return flips, skew_s


class LockstepError(RuntimeError):
    pass


def run_in_lockstep(
    rounds: list[dict[str, dict[str, float]]],
    apply: Callable[[str, dict[str, float]], object],
    *,
    pause_s: float,
    first_step: int = 1,
    steps: int | None = None,
) -> dict[str, float]:
    """Apply each round's shares to all its regions at once: one thread per region, all released by a
    barrier, so no region waits for another's call to finish. Between rounds: `pause_s`. Returns
    when each region's last call returned (epoch seconds); the first round with a failed region
    raises, naming each region and its cause. The rounds are steps `first_step`.. of `steps` (all of
    them unless told: a caller may set them one call at a time)."""
    reached: dict[str, float] = {}
    workers = max((len(r) for r in rounds), default=1)
    total = steps or len(rounds)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lockstep") as pool:
        for number, shares_by_region in enumerate(rounds, start=first_step):
            together = Barrier(len(shares_by_region))

            def apply_together(region: str, shares: dict[str, float], together: Barrier = together) -> float:
                together.wait()
                apply(region, shares)
                return time.time()

            done = {region: pool.submit(apply_together, region, shares) for region, shares in shares_by_region.items()}
            failed = {}
            for region, future in done.items():
                try:
                    reached[region] = future.result()
                except Exception as exc:
                    failed[region] = exc
            if failed:
                causes = "; ".join(f"{region}: {exc}" for region, exc in sorted(failed.items()))
                raise LockstepError(f"{causes} (step {number} of {total})")
            log.info("step %d/%d set in %s", number, total, ", ".join(sorted(shares_by_region)))
            if number < first_step + len(rounds) - 1:
                time.sleep(pause_s)
    return reached


def _steps(spec: AppSpec, launch: Launched) -> list[dict[str, float]]:
    previous = launch.previous.color if launch.previous else None
    return flip_steps(launch.color, previous, spec.bluegreen.weight_steps)


def _flip_fields(launch: Launched) -> dict[str, Any]:
    return {k: getattr(launch, k) for k in ("region", "color", "version", "digest", "previous")}


def _note_flip(production: ProductionState, spec: AppSpec, launch: Launched, run_id: str) -> None:
    production.note_flip(
        spec.name,
        launch.region,
        live={"color": launch.color, "version": launch.version, "digest": launch.digest},
        previous=launch.previous.dump() if launch.previous else None,
        rollback_window_s=spec.bluegreen.rollback_window_s,
        run_id=run_id,
    )


def flip_back(app: str, flipped: dict[str, Any], *, reason: str) -> str:
    """Traffic back to the previous color at once, then the new color removed. Returns what was done."""
    _, _, production = _context(app)
    region, previous = flipped["region"], flipped.get("previous")
    if previous is not None and production.members(app, region, previous["color"]):
        production.set_shares(app, region, {previous["color"]: 100})
        production.note_flip_back(app, region, live=previous)
        done = f"traffic in {region} went back to {previous['color']} ({previous['version']})"
    else:
        done = f"{region} had no previous version, so the app was taken out of it, as it was before"
    if flipped["color"] != (previous or {}).get("color"):
        removed = production.fleets.destroy(app, region, flipped["color"], force=previous is None)
        done += f"; removed the {flipped['color']} fleet ({len(removed)} member(s))"
    log.warning("%s: flipped back because %s: %s", app, reason, done)
    return done


NOTHING_TO_UNDO = "nothing of this release took traffic here"
TRAFFIC_WENT_BACK = "traffic went back to"  # a region counts as rolled back only where this happened


def rollback_release(
    plan: dict[str, Any], baked: dict[str, Any], run_id: str, *, held_by_run: bool = False
) -> dict[str, str]:
    """After any failure: every region this run flipped (wholly or halfway) goes back to what was live
    before; the fleets this run launched and the canaries go (`rollout.plan_rollback` decides).
    `held_by_run`: the run held each region's lease when it ended, even if a teardown freed it since."""
    app = plan["app"]
    _, _, production = _context(app)
    undone: dict[str, str] = {}
    for region in plan["regions"]:
        fleets = {}
        for color in ("blue", "green", "canary", "baseline"):
            members = production.members(app, region, color)
            if members:
                fleets[color] = members[0].digest
        record = production.record(app, region)
        state = RegionState(
            shares=production.shares(app, region),
            fleet_digests=fleets,
            recorded_live=record.get("live"),
            recorded_previous=record.get("previous"),
            lease_holder=run_id if held_by_run else (record.get("lease") or {}).get("holder"),
        )
        action = plan_rollback(state, digest=baked["digest"], run_id=run_id)
        done = []
        if action.back_to is not None:
            production.set_shares(app, region, {action.back_to: 100})
            done.append(f"{TRAFFIC_WENT_BACK} {action.back_to} ({action.why})")
        if action.note_flip_back:
            back = record.get("previous") or {}
            production.note_flip_back(
                app, region, live={k: back[k] for k in ("color", "version", "digest") if k in back}
            )
        removed = [
            name
            for color in action.remove
            for name in production.fleets.destroy(app, region, color, force=action.leaves_region)
        ]
        if removed:
            done.append(f"removed {removed}")
        undone[region] = "; ".join(done) if done else NOTHING_TO_UNDO
    log.warning("rolled back: %s", undone)
    return undone


def release_leases(app: str, regions: list[str], run_id: str) -> list[str]:
    _, _, production = _context(app)
    return [region for region in regions if production.release(app, region, run_id)]


def record_release(plan: dict[str, Any], baked: dict[str, Any]) -> dict[str, Any]:
    """The outcome, read back from the platform: what is live and what is kept, per region."""
    _, _, production = _context(plan["app"])
    regions: dict[str, dict[str, Any]] = {}
    for region in plan["regions"]:
        live = production.live(plan["app"], region)
        if live is None or live["digest"] != baked["digest"]:
            raise ProductionError(f"{region} does not run {baked['digest']} after the release: {live}")
        regions[region] = {"live": live, "kept": production.kept(plan["app"], region)}
    lines = [f"{'region':<10} {'color':<6} {'version':<10} {'digest':<20} kept for rollback"]
    for region, state in regions.items():
        kept = state["kept"]
        lines.append(
            f"{region:<10} {state['live']['color']:<6} {state['live']['version']:<10} "
            f"{state['live']['digest'][:19]:<20} {kept['color'] + ' ' + kept['version'] if kept else '-'}"
        )
    log.info("%s %s is live everywhere:\n%s", plan["app"], plan["version"], "\n".join(lines))
    return {"app": plan["app"], "version": plan["version"], "digest": baked["digest"], "regions": regions}


# --- manual rollback ------------------------------------------------------------------------

REDEPLOYED = "redeployed the previous release by digest"


ROLLED_BACK_TO_KEPT = "flipped back to the kept color"


def start_rollback_region(app: str, region: str, run_id: str) -> dict[str, Any]:
    """Begin putting the previous release back in `region`, without waiting: while its rollback
    window lasts, the kept color (checked not revoked) is what the traffic goes back to, once it is
    healthy; past it, the previous release's fleet is started anew by digest (named under
    `launching`) and flipped to in the spec's steps. The caller waits while `pending_rollback`
    names a wait, then `finish_rollback_region` ends it. The region's lease is held from here until
    the rollback ends, and freed on any failure."""
    platform, spec, production = _context(app)
    production.acquire(app, region, run_id, dag_id=f"rollback_{app}", run_state=run_state)
    work: dict[str, Any] = {"app": app, "region": region, "run_id": run_id}
    try:
        live = production.live(app, region)
        if live is None:
            raise ProductionError(f"{app} runs nothing in {region}; there is nothing to roll back")
        kept = production.kept(app, region)
        if kept is not None:
            deployable(platform, region, spec.repository, str(kept["digest"]))  # no flip back onto a revoked image
            return work | {"live": live, "kept": kept, "since": time.time()}
        previous = production.record(app, region).get("previous_release") or {}
        if not previous:
            raise ProductionError(
                f"{app} in {region}: no kept color and no earlier release recorded; release the wanted version instead"
            )
        launched = launch_new_color(
            {"app": app, "version": previous["version"]},
            {"digest": previous["digest"]},
            region,
            run_id,
            dag_id=f"rollback_{app}",
            wait=False,
        )
        launching = launched.pop("launching", [])
        return work | {"live": live, "launched": launched, "launching": launching}
    except BaseException:
        production.release(app, region, run_id)
        raise


def pending_rollback(work: dict[str, Any]) -> tuple[Any, float] | None:
    """What the rollback still waits for, as the platform names it: the kept color's health; or a
    redeploy's fleet (see `pending_launch`), then its flip's steps (`advance_flip`). None once there
    is nothing left to wait for. A failure is raised (a failed launch removed), the lease freed."""
    _, spec, production = _context(work["app"])
    try:
        if "kept" in work:
            kept_members = production.members(work["app"], work["region"], work["kept"]["color"])
            waiter: tuple[Any, float] | None = production.fleets.pending_healthy(
                spec, kept_members, since=work["since"]
            )
            return waiter
        for launch in work["launching"]:
            waiter = pending_launch(work["app"], launch)
            if waiter is not None:
                return waiter
        flipping = work.setdefault("flip", start_flip({"app": work["app"]}, work["launched"], work["run_id"]))
        return advance_flip(flipping)
    except BaseException:
        production.release(work["app"], work["region"], work["run_id"])
        raise


def finish_rollback_region(work: dict[str, Any]) -> dict[str, Any]:
    """Once nothing is left to wait for: the traffic back on the kept color, or the redeploy's flip
    recorded; the region's lease freed. Returns the region, how, from what and to what."""
    app, region, run_id = work["app"], work["region"], work["run_id"]
    _, spec, production = _context(app)
    live = work["live"]
    try:
        if "kept" in work:
            kept = work["kept"]
            production.set_shares(app, region, {kept["color"]: 100})
            production.note_flip(
                app,
                region,
                live={k: kept[k] for k in ("color", "version", "digest")},
                previous={k: live[k] for k in ("color", "version", "digest")},
                rollback_window_s=spec.bluegreen.rollback_window_s,
                run_id=run_id,
            )
            return {"region": region, "how": ROLLED_BACK_TO_KEPT, "from": live, "to": kept}
        return {"region": region, "how": REDEPLOYED, "from": live, "to": finish_flip(work["flip"])}
    finally:
        production.release(app, region, run_id)


# --- a person's stop (stop_<app>) -----------------------------------------------------------

STOP_POLL_S = 2.0
ENDED_RUN_STATES = ("success", "failed")


def request_stop(
    app: str, regions: list[str], *, by: str, reason: str, marked_failed_run: str | None = None
) -> dict[str, Any]:
    """Record the stop in every region (each release asked for before now stops at its next look: its
    gates within seconds, its launches and flips before their next change). Returns the release runs
    that held a region then: the ones `make_safe_after_stop` waits for and checks.
    `marked_failed_run`: a release run already ended by hand. Its teardown may have freed its leases
    before this stop came, so it counts as the holder of every region nobody holds now."""
    _, _, production = _context(app)
    at = time.time()
    for region in regions:
        production.request_stop(app, region, by=by, reason=reason, at=at)
    leases = {region: production.record(app, region).get("lease") for region in regions}
    holders = runs_to_make_safe(leases, f"release_{app}", marked_failed_run)
    log.warning("%s: stop requested by %s (%s); release runs holding regions: %s", app, by, reason, holders or "none")
    return {"at": at, "by": by, "reason": reason, "holders": holders}


def make_safe_after_stop(
    app: str,
    regions: list[str],
    requested: dict[str, Any],
    *,
    release_digest: Callable[[str], str | None],
    timeout_s: float,
) -> dict[str, str]:
    """Wait until every release run that held a region when the stop came has ended. One that ended
    without undoing its changes (marked failed by hand: its rollback task and teardown never ran) is
    undone here as its rollback task would have (`release_digest(run_id)`: what it baked), and its
    leases released. Returns, per region, what runs there now and what was done."""
    _, _, production = _context(app)
    dag_id = f"release_{app}"
    runs = sorted(set(requested.get("holders", {}).values()))
    deadline = time.monotonic() + timeout_s
    while running := [run for run in runs if run_state(dag_id, run) not in ENDED_RUN_STATES]:
        if time.monotonic() > deadline:
            raise ProductionError(
                f"{dag_id} run(s) {running} did not end within {timeout_s:.0f}s of the stop; their gates look for it "
                "every few seconds, so one is probably not in a gate (a long build or an approval waiting): mark "
                f"it failed, then run stop_{app} again to undo what it changed"
            )
        time.sleep(STOP_POLL_S)
    done: dict[str, str] = {}
    held_then = requested.get("holders", {})
    for region in regions:
        run = held_then.get(region)
        holder = (production.record(app, region).get("lease") or {}).get("holder")
        # The run that held the region when the stop came has ended. Its rollback may have undone it
        # (then there is nothing left), or not (marked failed by hand: its teardown may still have
        # freed the lease). Never a region another run holds now.
        if run is not None and holder in (None, run):
            done[region] = _undo_ended_release(app, region, str(run), release_digest(str(run)))
        live = production.live(app, region)
        now_live = f"{live['version']} ({live['color']})" if live else "nothing"
        done[region] = f"{done.get(region, 'its release undid itself')}; live: {now_live}"
    log.info("%s after the stop: %s", app, done)
    return done


def _undo_ended_release(app: str, region: str, run_id: str, digest: str | None) -> str:
    _, _, production = _context(app)
    what = []
    if production.members(app, region, "canary") or production.members(app, region, "baseline"):
        ended = end_canary(app, region)
        what.append(f"ended its canary (removed {ended['removed']})")
    if digest is not None:
        undone = rollback_release({"app": app, "regions": [region]}, {"digest": digest}, run_id, held_by_run=True)
        if undone[region] != NOTHING_TO_UNDO:
            what.append(undone[region])
    if production.release(app, region, run_id):
        what.append(f"released the lease of {run_id}")
    return "; ".join(what) or "its release undid itself"
