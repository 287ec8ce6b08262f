"""Deferrable gate operators. While a gate waits it holds no worker slot: it defers to a trigger
in the triggerer, then resumes in `execute_complete` to act on the verdict and report it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from immutable.ui.links import LoadBalancerStatsLink, PrometheusGraphLink, RegistryImageLink

GATE_MARGIN_S = 120.0  # seconds of slack on top of a gate's planned duration before it times out


class GateFailed(AirflowFailException):
    """A gate judged the release harmful. The message: cause, evidence, what was done, what next.

    A verdict is not retried (a retry would judge a bad canary again, or watch a region that was
    already flipped back): the task fails at once, whatever its `retries`."""


class GateError(RuntimeError):
    """The canary gate could not judge (its metrics backend failed): no verdict, so the task may retry."""


def _platform_and_spec(app: str) -> tuple[Any, Any]:
    from immutable.pipelines.production import spec_for
    from immutable.platforms import platform_for

    platform = platform_for()
    return platform, spec_for(platform, app)


def _queries(platform: Any, checks: list[Any], labels: dict[str, str], colors: list[str]) -> list[Any]:
    """Each check's query for each color, as the platform's metrics backend reads it (for the links)."""
    from immutable.platforms import metrics_client_for

    client = metrics_client_for(platform.metrics.backend(labels["app"], labels["region"]))
    return [client.query(c.model_dump(), **labels, color=color) for c in checks for color in colors]


def _stop_watch(context: Any, app: str, region: str) -> dict[str, Any] | None:
    """What the trigger watches for a person's stop: releases asked for before a stop request end.
    None outside a release (a rollback's gate has no `validate` plan)."""
    from immutable.pipelines.production import requested_at

    plan = context["ti"].xcom_pull(task_ids="validate")
    if not isinstance(plan, dict) or "created" not in plan:
        return None
    return {"app": app, "region": region, "since": requested_at(plan)}


def _record_links(context: Any, found: dict[str, str]) -> None:
    from immutable.ui.links import LINKS_XCOM_KEY

    if found:
        context["ti"].xcom_push(key=LINKS_XCOM_KEY, value=found)


GATE_LINKS = (PrometheusGraphLink(), LoadBalancerStatsLink(), RegistryImageLink())


class _GateOperator(BaseOperator):
    """A gate whose trigger never reported is a gate that could not judge: say why first, and retry."""

    gate_name = "gate"
    app: str

    def where(self) -> str:
        raise NotImplementedError

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout

        failure: Exception
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout as exc:
            failure = exc
            cause = (
                f"no event came from its trigger before the deferral timed out ({exc}). The triggerer was not "
                "running it: the triggerer process is down or stalled (`make status` shows each Airflow "
                "component's health)"
            )
        except TaskDeferralError as exc:
            failure = exc
            cause = f"its trigger failed in the triggerer: {exc}"
        raise GateError(
            "\n".join(
                [
                    f"The {self.gate_name} of {self.app} in {self.where()} could not judge: {cause}.",
                    "Done about it: nothing; without a verdict production traffic stays as it is.",
                    "Next: the gate is retried if it has retries left, judging afresh once a triggerer runs; "
                    "else clear this task when the triggerer is back.",
                ]
            )
        ) from failure


def gate_timeout_s(planned_s: float, window_s: float) -> float:
    """The deferral's timeout: the gate's own time, one metrics outage it may wait out (with the
    window that follows it), and a margin."""
    from immutable.triggers import BACKEND_OUTAGE_LIMIT_S

    return planned_s + BACKEND_OUTAGE_LIMIT_S + window_s + GATE_MARGIN_S


class CanaryGateOperator(_GateOperator):
    """Judge the canary against the freshly launched baseline (Kayenta-style) in the pilot region."""

    template_fields: Sequence[str] = ("app", "region", "canary")
    ui_color = "#f0e4a8"
    operator_extra_links = GATE_LINKS
    gate_name = "canary analysis"

    def __init__(self, *, app: str, region: str, canary: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not app or not region:
            raise ValueError("CanaryGateOperator needs app and region")
        self.app = app
        self.region = region
        self.canary = canary  # the prepare task's XCom: {"skipped": bool, ...}

    def where(self) -> str:
        return str(self.region)

    def execute(self, context: Any) -> Any:
        from immutable.triggers import CanaryAnalysisTrigger

        if self.canary.get("skipped"):
            self.log.info("no canary analysis: %s", self.canary.get("reason"))
            return {"status": "skipped", "reason": self.canary.get("reason")}
        from immutable.pipelines.production import canary_timing_for

        platform, spec = _platform_and_spec(self.app)
        settings = spec.canary
        timing = canary_timing_for(spec, platform)
        start_at = time.time() + settings.warmup_s
        planned_s = settings.warmup_s + settings.intervals * settings.interval_s + timing.delay_s
        self.log.info(
            "judging canary %s against baseline %s: %d interval(s) of %.0fs after %.0fs warmup, %d metric(s)",
            self.canary["canary_version"],
            self.canary["baseline_version"],
            settings.intervals,
            settings.interval_s,
            settings.warmup_s,
            len(settings.metrics),
        )
        if (timing.step_s, timing.delay_s, timing.min_samples) != (settings.step_s, 0, settings.min_samples):
            self.log.info(
                "the metrics come one per %.0fs and %.0fs late: each interval is judged %.0fs after it ends, "
                "at least %d sample(s) per side (the spec asks %d)",
                timing.step_s,
                timing.delay_s,
                timing.delay_s,
                timing.min_samples,
                settings.min_samples,
            )
        backend = platform.metrics.backend(self.app, self.region)
        labels = {"app": self.app, "region": self.region, "window": settings.rate_window}
        found = platform.links.gate_links(
            app=self.app,
            repository=spec.repository,
            region=self.region,
            digest=self.canary["canary_digest"],
            queries=_queries(platform, settings.metrics, labels, ["canary", "baseline"]),
            start_at=start_at,
            duration_s=settings.intervals * settings.interval_s,
        )
        _record_links(context, found)
        self.defer(
            trigger=CanaryAnalysisTrigger(
                backend=backend,
                metrics=[m.model_dump() for m in settings.metrics],
                analysis=settings.judge_settings() | {"min_samples": timing.min_samples},
                labels={"app": self.app, "region": self.region},
                start_at=start_at,
                interval_s=settings.interval_s,
                intervals=settings.intervals,
                step_s=timing.step_s,
                data_delay_s=timing.delay_s,
                rate_window=settings.rate_window,
                stop_watch=_stop_watch(context, self.app, self.region),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=gate_timeout_s(planned_s, settings.interval_s)),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from immutable.analysis import IntervalResult, format_table

        tables = []
        for number, interval in enumerate(event.get("intervals", []), start=1):
            table = format_table(IntervalResult.from_dict(interval))
            tables.append(f"interval {number}:\n{table}")
            self.log.info("canary analysis, interval %d:\n%s", number, table)
        intervals = event.get("intervals") or []
        verdict = event | {
            "score": intervals[-1]["score"] if intervals else None,
            "canary_version": self.canary.get("canary_version"),
            "baseline_version": self.canary.get("baseline_version"),
        }
        if event["status"] == "pass":
            self.log.info("canary passed: %s", event["reason"])
            return verdict
        if event["status"] == "marginal":  # the spec's on_marginal: ask; the next task asks a person
            self.log.info("canary marginal, a person decides next: %s", event["reason"])
            return verdict | {"score_tables": "\n".join(tables)}
        _record_verdict(context, event)
        if event["status"] == "stopped":
            raise GateFailed(
                "\n".join(
                    [
                        f"{event['reason']}. The release of {self.app} {self.canary.get('canary_version')} stopped "
                        f"during its canary in {self.region}.",
                        *tables,
                        "Done about it: production traffic stays on the current version "
                        f"{self.canary.get('baseline_version')}; the canary and baseline fleets are removed by "
                        "teardown, and the rollback task removes anything else this run launched.",
                    ]
                )
            )
        if event["status"] == "error":
            raise GateError(
                "\n".join(
                    [
                        f"The canary analysis of {self.app} {self.canary.get('canary_version')} in {self.region} "
                        f"could not judge: {event['reason']}.",
                        *tables,
                        "Done about it: production traffic stays on the current version "
                        f"{self.canary.get('baseline_version')}; the canary and baseline fleets are removed by "
                        "teardown once the gate is done.",
                        "Next: check that the metrics backend answers; the gate tries again if it has retries left, "
                        "else release the version again.",
                    ]
                )
            )
        failing = _failing_metrics(event)
        cause = (
            f"The canary of {self.app} {self.canary.get('canary_version')} failed its analysis in {self.region}"
            + (f" on {', '.join(failing)}" if failing else "")
            + f": {event['reason']}."
        )
        raise GateFailed(
            "\n".join(
                [
                    cause,
                    *tables,
                    "Done about it: production traffic stays on the current version "
                    f"{self.canary.get('baseline_version')}; the canary and baseline fleets are removed by teardown.",
                    "Next: look at the metric(s) above in the new version, fix it, and release a new version.",
                ]
            )
        )


def _record_verdict(context: Any, event: dict[str, Any]) -> None:
    """A failed gate's verdict as XCom `verdict` (status, reason, when), beside the exception: for the
    UI's XCom tab and for whoever measures how fast the flip back followed."""
    context["ti"].xcom_push(
        key="verdict", value={k: v for k, v in event.items() if k in ("status", "reason", "failed_at")}
    )


def _failing_metrics(event: dict[str, Any]) -> list[str]:
    intervals = event.get("intervals") or []
    if not intervals:
        return []
    return [m["name"] for m in intervals[-1]["metrics"] if m.get("counted") and not m.get("passed")]


class PostFlipGateOperator(_GateOperator):
    """Watch the new color after the flip; on a breach flip back at once and remove the new color.

    With `flip_back=False` (a rollback's redeploy, whose "previous" is the release being rolled back
    from) a breach fails the task and changes nothing: going back to that release is a person's call.
    """

    template_fields: Sequence[str] = ("app", "flipped")
    ui_color = "#c8e6c9"
    operator_extra_links = GATE_LINKS
    gate_name = "post-flip gate"

    def __init__(self, *, app: str, flipped: Any, flip_back: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.flipped = flipped  # the flip task's XCom for one region
        self.flip_back = flip_back

    def where(self) -> str:
        return str(self.flipped["region"]) if isinstance(self.flipped, dict) else "its region"

    def execute(self, context: Any) -> Any:
        from immutable.pipelines.production import threshold_timing_for
        from immutable.triggers import ThresholdGateTrigger, duration_s

        platform, spec = _platform_and_spec(self.app)
        settings = spec.bluegreen
        timing = threshold_timing_for(spec, platform)
        region, color = self.flipped["region"], self.flipped["color"]
        self.log.info(
            "watching %s in %s (%s) for %.0fs: %s",
            self.app,
            region,
            color,
            settings.post_flip_window_s,
            ", ".join(f"{c.name} <= {c.max}" for c in settings.post_flip_checks),
        )
        backend = platform.metrics.backend(self.app, region)
        start_at = time.time() + settings.post_flip_warmup_s
        labels = {"app": self.app, "region": region, "window": spec.canary.rate_window}
        found = platform.links.gate_links(
            app=self.app,
            repository=spec.repository,
            region=region,
            digest=self.flipped["digest"],
            queries=_queries(platform, settings.post_flip_checks, labels, [color]),
            start_at=start_at,
            duration_s=settings.post_flip_window_s,
        )
        _record_links(context, found)
        self.defer(
            trigger=ThresholdGateTrigger(
                backend=backend,
                checks=[c.model_dump() for c in settings.post_flip_checks],
                labels={"app": self.app, "region": region, "color": color},
                start_at=start_at,
                window_s=settings.post_flip_window_s,
                step_s=timing.step_s,
                data_delay_s=timing.delay_s,
                lookback_s=timing.lookback_s,
                rate_window=spec.canary.rate_window,
                failures_allowed=settings.post_flip_failures,
                stop_watch=_stop_watch(context, self.app, region),
            ),
            method_name="execute_complete",
            timeout=timedelta(
                seconds=gate_timeout_s(
                    settings.post_flip_warmup_s + settings.post_flip_window_s + timing.delay_s,
                    duration_s(spec.canary.rate_window),
                )
            ),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from immutable.gates import format_history
        from immutable.pipelines import production

        region = self.flipped["region"]
        evidence = format_history(event.get("history") or [])
        self.log.info("post-flip gate in %s:\n%s", region, evidence)
        if event["status"] == "pass":
            return {"region": region, "status": "pass", "reason": event["reason"]}
        _record_verdict(context, event)
        if not self.flip_back:
            raise GateFailed(
                f"The post-flip gate of {self.app} {self.flipped['version']} failed in {region}: {event['reason']}.\n"
                f"{evidence}\nNothing was flipped: {self.flipped['version']} keeps the traffic, since going back to "
                f"what ran before it is a person's call. Next: release a fixed version, or roll back further."
            )
        undone = production.flip_back(self.app, self.flipped, reason=event["reason"])
        if event["status"] == "stopped":
            raise GateFailed(
                f"{event['reason']}. The release of {self.app} {self.flipped['version']} stopped while {region} was "
                f"watched after its flip.\nDone about it: {undone}; the rollback task sends every other region "
                "this run flipped back."
            )
        raise GateFailed(
            "\n".join(
                [
                    f"The post-flip gate of {self.app} {self.flipped['version']} failed in {region}: "
                    f"{event['reason']}.",
                    evidence,
                    f"Done about it: {undone}",
                    "Next: the release run fails and every region it flipped is flipped back; fix the new version "
                    "and release again.",
                ]
            )
        )
