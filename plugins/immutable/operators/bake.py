"""Baking the app onto the base. Where a platform's bake is done in the task (a Docker build and a
push) it returns the image; where making the image takes minutes to most of an hour (an AMI from a
builder instance) the platform answers "pending" and names a trigger: the task defers to the
triggerer until the image is available, holding no worker slot meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

BAKE_MARGIN_S = 300.0  # seconds on top of the trigger's own timeout before Airflow gives up on it


class BakeOperator(BaseOperator):
    """Install the release's package (`packaged`) onto the base its `plan` pins, with provenance."""

    template_fields: Sequence[str] = ("plan", "packaged")
    ui_color = "#e8f0fe"

    def __init__(self, *, plan: Any, packaged: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.packaged = packaged

    def execute(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import release

        baked = release.bake(self.plan, self.packaged, context["run_id"], wait=False)
        if baked.get("pending"):
            from immutable.payloads import Baked
            from immutable.platforms import platform_for

            trigger, timeout_s = platform_for().images.bake_waiter(Baked.of(baked))
            self.defer(
                trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=timeout_s + BAKE_MARGIN_S)
            )
        return baked

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import release

        self.log.info(
            "%s in %s is %s after %.0fs in the triggerer%s",
            event["image_id"],
            event["region"],
            event["state"],
            event["waited_s"],
            f": {event['message']}" if event.get("message") else "",
        )
        done = release.finish_bake(event["return_value"])
        return done | {"waited_in_triggerer_s": event["waited_s"]}
