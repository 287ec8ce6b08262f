"""Launching fleets and environments: a new color, the canary with its baseline, dev and staging.
Where a platform starts them in seconds (containers) the task waits for them itself; where they
take minutes (an Auto Scaling group filling and passing its load balancer's checks, an instance
passing its status checks) the platform names a trigger and the task defers to the triggerer
until each is up, holding no worker slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from immutable.operators.deferring import PlatformWaitOperator


class _LaunchOperator(PlatformWaitOperator):
    """`start` the fleets (the result lists them under `launching`), wait until each is healthy,
    then the result without that list (`done`)."""

    ui_color = "#e6f4ea"

    def __init__(self, *, plan: Any, baked: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.baked = baked

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        from immutable.pipelines import production

        for launch in work.get("launching", []):
            waiter = production.pending_launch(self.plan["app"], launch)
            if waiter is not None:
                self.log.info("%s %s: waiting in the triggerer until it is healthy", launch["region"], launch["color"])
                return waiter
        return None

    def done(self, work: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in work.items() if k != "launching"}


class LaunchNewColorOperator(_LaunchOperator):
    """Start the new color at full size on the new digest in `region`; healthy before any traffic."""

    template_fields: Sequence[str] = ("plan", "baked", "region")

    def __init__(self, *, region: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.region = region

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.launch_new_color(self.plan, self.baked, self.region, context["run_id"], wait=False)


class PrepareCanaryOperator(_LaunchOperator):
    """Launch the canary (new image) and a fresh baseline (production image); once both are
    healthy, each takes its share of the pilot region's traffic."""

    template_fields: Sequence[str] = ("plan", "baked")

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.prepare_canary(self.plan, self.baked, context["run_id"], wait=False)

    def done(self, work: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import production

        if work.get("skipped"):
            return work
        return production.open_canary(self.plan["app"], work)


class CreateEnvironmentOperator(PlatformWaitOperator):
    """Start the image as the `kind` environment (dev: isolated; staging: the staging config); up
    before its tests run."""

    template_fields: Sequence[str] = ("plan", "baked")
    ui_color = "#e6f4ea"

    def __init__(self, *, kind: str, plan: Any, baked: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.plan = plan
        self.baked = baked

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import release

        return release.create_environment(self.kind, self.plan, self.baked, context["run_id"], wait=False)

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        from immutable.pipelines import release

        return release.pending_environment(work)


class RollbackRegionOperator(PlatformWaitOperator):
    """Put the previous release back in `region`: a flip back to the kept color while its rollback
    window lasts (seconds); past it, the previous release's image launched anew by digest, waited
    for in the triggerer where the platform names a wait, then flipped to in the spec's steps."""

    template_fields: Sequence[str] = ("region",)
    ui_color = "#fde2e1"

    def __init__(self, *, app: str, region: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.region = region

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.start_rollback_region(self.app, self.region, context["run_id"])

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        from immutable.pipelines import production

        waiter = production.pending_rollback(work)
        if waiter is not None:
            self.log.info(
                "%s: a fleet the rollback flips to is waited for in the triggerer, until healthy", self.region
            )
        return waiter

    def done(self, work: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.finish_rollback_region(work)


class _FlipOperator(PlatformWaitOperator):
    """A flip of traffic to the new color(s) `launched` for the release `plan`. Safe to retry: each
    step sets absolute shares, so a retry takes the same steps again, from the first."""

    template_fields: Sequence[str] = ("plan", "launched")
    ui_color = "#fff4e5"

    def __init__(self, *, plan: Any, launched: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.launched = launched


class FlipOperator(_FlipOperator):
    """Move one region's traffic to its new color in the spec's steps; between two steps, the spec's
    pause and the new color's health, waited for in the triggerer where the platform names a wait
    (aws: a target not healthy)."""

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.start_flip(self.plan, self.launched, context["run_id"])

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        from immutable.pipelines import production

        waiter = production.advance_flip(work)
        if waiter is not None:
            region = work["launched"]["region"]
            self.log.info("%s: the new color's health between two steps is waited for in the triggerer", region)
        return waiter

    def done(self, work: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.finish_flip(work)


class FlipAllOperator(_FlipOperator):
    """Synchronized rollout: once every new color is up and healthy, every region's weights move in
    lockstep (all regions at each step); between steps the pause and every new color's health,
    waited for in the triggerer where the platform names a wait. Returns the flips; XCom `skew_s`:
    seconds between the first and the last region reaching 100%."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ti: Any = None  # the running task's instance, for the skew's XCom once the flip is done

    def execute(self, context: Any) -> Any:
        self._ti = context["ti"]
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        self._ti = context["ti"]
        return super().execute_complete(context, event)

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.start_flip_all(self.plan, list(self.launched), context["run_id"])

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        from immutable.pipelines import production

        waiter = production.advance_flip_all(work)
        if waiter is not None:
            self.log.info("a new color's health between two steps is waited for in the triggerer")
        return waiter

    def done(self, work: dict[str, Any]) -> Any:
        from immutable.pipelines import production

        flips, skew_s = production.finish_flip_all(work)
        self._ti.xcom_push(key="skew_s", value=skew_s)
        return flips
