"""Copying the signed image to one region. Where a platform's copy is quick (a registry push) it is
done in the task; where it takes minutes to an hour (an AMI copy) the platform answers "pending"
and names a trigger: the task defers to the triggerer until the copy is available, holding no
worker slot meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

COPY_MARGIN_S = 300.0  # seconds on top of the trigger's own timeout before Airflow gives up on it


class CopyToRegionOperator(BaseOperator):
    """Copy the release's signed image (`baked`) into `region` and verify its signature there."""

    template_fields: Sequence[str] = ("plan", "baked", "region")
    ui_color = "#e8f0fe"

    def __init__(self, *, plan: Any, baked: Any, region: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.baked = baked
        self.region = region

    def execute(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import release

        report = release.copy_to_region(self.plan, self.baked, self.region, wait=False)
        if report.get("pending"):
            from immutable.payloads import RegionCopy
            from immutable.platforms import platform_for

            trigger, timeout_s = platform_for().images.copy_waiter(RegionCopy.of(report))
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=timeout_s + COPY_MARGIN_S),
            )
        return report

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import release

        self.log.info(
            "%s in %s is %s after %.0fs in the triggerer",
            event["image_id"],
            event["region"],
            event["state"],
            event["waited_s"],
        )
        failure = None if event["status"] == "success" else str(event["message"])
        done = release.finish_copy(self.plan, self.baked, self.region, event["return_value"], failure)
        return done | {"waited_in_triggerer_s": event["waited_s"]}
