"""Making an image: the base build and the app's bake. Where a platform makes the image in the task
(a Docker build and a push) it returns it; where making it takes minutes to most of an hour (an AMI
from a builder instance) the platform answers "pending" and names each wait in turn (the builder's
SSM agent, its script, the AMI): the task defers to the triggerer for each, holding no worker slot,
and the platform goes on after each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from immutable.operators.deferring import PlatformWaitOperator


class _ImageOperator(PlatformWaitOperator):
    """`start` making an image; while the platform says it is pending, wait on the trigger it names
    (`waiter`) and let it go on (`finish`, which may answer pending again). Returns the image's payload."""

    ui_color = "#e8f0fe"

    def waiter(self, pending: dict[str, Any]) -> tuple[Any, float]:
        raise NotImplementedError

    def finish(self, pending: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        return self.waiter(work) if work.get("pending") else None

    def after_wait(self, work: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        if "image_id" in event:  # the AMI's wait (ImageAvailableTrigger) says how it ended
            self.log.info(
                "%s in %s is %s after %.0fs in the triggerer%s",
                event["image_id"],
                event["region"],
                event["state"],
                event["waited_s"],
                f": {event['message']}" if event.get("message") else "",
            )
        made = self.finish(work)
        if event.get("waited_s") is not None:
            made = made | {"waited_in_triggerer_s": event["waited_s"]}
        return made


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
