"""Copying the signed image to one region. On the local platform the copy is a registry push done
in the task; on aws an AMI copy takes minutes to an hour, so the task starts it and defers to the
triggerer until the copy is available, holding no worker slot meanwhile."""

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
            from immutable.aws.triggers import COPY_TIMEOUT_S, ImageAvailableTrigger
            from immutable.config import load_platform

            self.defer(
                trigger=ImageAvailableTrigger(
                    region=self.region,
                    image_id=report["image_id"],
                    aws_conn_id=load_platform().aws_settings.connection_id,
                    return_value=report,
                    started_at=report["started_at"],
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=COPY_TIMEOUT_S + COPY_MARGIN_S),
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
