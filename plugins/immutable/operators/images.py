"""Making an image: the base build and the app's bake. Where a platform makes the image in the task
(a Docker build and a push) it returns it; where making it takes minutes to most of an hour (an AMI
from a builder instance) the platform answers "pending" and names a trigger: the task defers to
the triggerer until the image is available, holding no worker slot meanwhile, then finishes it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

IMAGE_MARGIN_S = 300.0  # seconds on top of the trigger's own timeout before Airflow gives up on it


class _ImageOperator(BaseOperator):
    """Start making an image (`start`); if the platform says it is pending, defer on its waiter
    (`waiter`), and once the triggerer is done, `finish` it. Returns the image's payload."""

    ui_color = "#e8f0fe"

    def start(self, context: Any) -> dict[str, Any]:
        raise NotImplementedError

    def waiter(self, pending: dict[str, Any]) -> tuple[Any, float]:
        raise NotImplementedError

    def finish(self, pending: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def execute(self, context: Any) -> dict[str, Any]:
        made = self.start(context)
        if made.get("pending"):
            trigger, timeout_s = self.waiter(made)
            self.defer(
                trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=timeout_s + IMAGE_MARGIN_S)
            )
        return made

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.log.info(
            "%s in %s is %s after %.0fs in the triggerer%s",
            event["image_id"],
            event["region"],
            event["state"],
            event["waited_s"],
            f": {event['message']}" if event.get("message") else "",
        )
        return self.finish(event["return_value"]) | {"waited_in_triggerer_s": event["waited_s"]}


class BakeOperator(_ImageOperator):
    """Install the release's package (`packaged`) onto the base its `plan` pins, with provenance."""

    template_fields: Sequence[str] = ("plan", "packaged")

    def __init__(self, *, plan: Any, packaged: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.packaged = packaged

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import release

        return release.bake(self.plan, self.packaged, context["run_id"], wait=False)

    def waiter(self, pending: dict[str, Any]) -> tuple[Any, float]:
        from immutable.payloads import Baked
        from immutable.platforms import platform_for

        return platform_for().images.bake_waiter(Baked.of(pending))

    def finish(self, pending: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import release

        return release.finish_bake(pending)


class BuildBaseOperator(_ImageOperator):
    """Build the base image from the upstream image (`upstream`) at the version `plan` picked."""

    template_fields: Sequence[str] = ("upstream", "plan")

    def __init__(self, *, upstream: Any, plan: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upstream = upstream
        self.plan = plan

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import base_image

        return base_image.build(self.upstream, self.plan, context["run_id"], wait=False)

    def waiter(self, pending: dict[str, Any]) -> tuple[Any, float]:
        from immutable.payloads import BuiltBase
        from immutable.platforms import platform_for

        return platform_for().images.base_waiter(BuiltBase.of(pending))

    def finish(self, pending: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import base_image

        return base_image.finish_build(pending)
