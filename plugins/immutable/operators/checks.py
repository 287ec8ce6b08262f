"""Checks that run on the platform: a base image's promises, and a release's staging test command
against the app in staging. Where they run in containers they end within the task's first run;
where they run on an instance over SSM (aws) the task waits in the triggerer for the instance's
agent and then for the script, holding no worker slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from immutable.operators.deferring import PlatformWaitOperator


class StagingTestOperator(PlatformWaitOperator):
    """Wait for the app's health in staging, then run the spec's staging test command against it."""

    template_fields: Sequence[str] = ("plan", "environment")
    ui_color = "#fef7e0"

    def __init__(self, *, plan: Any, environment: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.environment = environment

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import release

        return release.start_staging_test(self.plan, self.environment)

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        from immutable.pipelines import release

        return release.staging_test_waiter(work)

    def after_wait(self, work: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import release

        return release.finish_staging_test(work)

    def done(self, work: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import release

        return release.staging_test_result(self.plan, work)


class BaseChecksOperator(PlatformWaitOperator):
    """Check every promise of the built base image (locally: containers from it; aws: a test
    instance of the AMI, terminated after); a failing check names itself."""

    template_fields: Sequence[str] = ("built",)
    ui_color = "#fef7e0"

    def __init__(self, *, built: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built = built

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import base_image

        return base_image.start_test(self.built)

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        from immutable.pipelines import base_image

        return base_image.test_waiter(work)

    def after_wait(self, work: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import base_image

        return base_image.finish_test(work)

    def done(self, work: dict[str, Any]) -> list[dict[str, Any]]:  # type: ignore[override]
        from immutable.pipelines import base_image

        return base_image.test_result(self.built, work)


class UpgradeProbeOperator(PlatformWaitOperator):
    """When the upstream is the candidate's own, list the candidate's packages with an upgrade in the
    archive now (locally: a container of it; aws: a probe instance of the AMI, terminated after)."""

    template_fields: Sequence[str] = ("upstream",)
    ui_color = "#fef7e0"

    def __init__(self, *, upstream: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upstream = upstream

    def start(self, context: Any) -> dict[str, Any]:
        from immutable.pipelines import base_image

        return base_image.start_upgrade_probe(self.upstream, context["dag_run"].run_after)

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        from immutable.pipelines import base_image

        return base_image.upgrade_probe_waiter(work)

    def after_wait(self, work: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        from immutable.pipelines import base_image

        return base_image.finish_upgrade_probe(work)
