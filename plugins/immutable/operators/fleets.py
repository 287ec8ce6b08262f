"""Launching fleets: a new color, and the canary with its baseline. Where a platform starts a fleet
in seconds (containers) the launch waits for it in the task; where a fleet takes minutes to fill
and pass its load balancer's checks (an Auto Scaling group) the platform names a trigger and the
task defers to the triggerer until every fleet it launched is healthy, holding no worker slot."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

LAUNCH_MARGIN_S = 120.0  # seconds on top of a trigger's own timeout before Airflow gives up on it


class _LaunchOperator(BaseOperator):
    """`start` the fleets (the result lists them under `launching`), wait for each in the triggerer
    while the platform says it is pending, then `finish`. Returns the finished result."""

    ui_color = "#e6f4ea"

    def __init__(self, *, plan: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def start(self, context: Any) -> dict[str, Any]:
        raise NotImplementedError

    def finish(self, started: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in started.items() if k != "launching"}

    def execute(self, context: Any) -> dict[str, Any]:
        return self._wait_or_finish(self.start(context))

    def execute_complete(self, context: Any, event: dict[str, Any], started: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "success":
            # The trigger's own judgement is only a hint: the platform judges the fleet again below.
            self.log.info("the triggerer's wait ended: %s", event.get("message") or event)
        return self._wait_or_finish(started)

    def _wait_or_finish(self, started: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import production

        for launch in started.get("launching", []):
            waiter = production.pending_launch(self.plan["app"], launch)
            if waiter is not None:
                trigger, timeout_s = waiter
                self.log.info("%s %s: waiting in the triggerer until it is healthy", launch["region"], launch["color"])
                self.defer(
                    trigger=trigger,
                    method_name="execute_complete",
                    kwargs={"started": started},
                    timeout=timedelta(seconds=timeout_s + LAUNCH_MARGIN_S),
                )
        return self.finish(started)


class LaunchNewColorOperator(_LaunchOperator):
    """Start the new color at full size on the new digest in `region`; healthy before any traffic."""

    template_fields: Sequence[str] = ("plan", "baked", "region")

    def __init__(self, *, baked: Any, region: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.baked = baked
        self.region = region

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.launch_new_color(self.plan, self.baked, self.region, context["run_id"], wait=False)


class PrepareCanaryOperator(_LaunchOperator):
    """Launch the canary (new image) and a fresh baseline (production image); once both are
    healthy, each takes its share of the pilot region's traffic."""

    template_fields: Sequence[str] = ("plan", "baked")

    def __init__(self, *, baked: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.baked = baked

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import production

        return production.prepare_canary(self.plan, self.baked, context["run_id"], wait=False)

    def finish(self, started: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import production

        if started.get("skipped"):
            return started
        return production.open_canary(self.plan["app"], started)
