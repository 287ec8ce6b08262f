"""Deferrable gates: async, JSON-serialisable triggers that run in Airflow's triggerer.

They only poll the platform's metrics and judge with the pure functions of `analysis` and
`gates`; acting on the verdict (flipping back, removing fleets) is the operator's job once it
resumes. Times are absolute (epoch seconds), so a trigger re-created after a scheduler or
triggerer restart carries on where the gate was, judging the intervals already past at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from immutable.platforms import metrics_client_for

QUERY_FIELDS = ("query", "cloudwatch")  # how a check is fetched, not how it is judged


def duration_s(window: str) -> float:
    """Seconds in a Prometheus-style duration such as 30s, 5m or 1h."""
    return float(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]


class CanaryAnalysisTrigger(BaseTrigger):
    """Judge canary against baseline every interval; fire once the gate passes or fails."""

    def __init__(
        self,
        *,
        backend: dict[str, str],
        metrics: list[dict[str, Any]],
        analysis: dict[str, Any],
        labels: dict[str, str],
        start_at: float,
        interval_s: float,
        intervals: int,
        step_s: float,
        rate_window: str,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.metrics = metrics
        self.analysis = analysis
        self.labels = labels
        self.start_at = start_at
        self.interval_s = interval_s
        self.intervals = intervals
        self.step_s = step_s
        self.rate_window = rate_window

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "immutable.triggers.CanaryAnalysisTrigger",
            {
                "backend": self.backend,
                "metrics": self.metrics,
                "analysis": self.analysis,
                "labels": self.labels,
                "start_at": self.start_at,
                "interval_s": self.interval_s,
                "intervals": self.intervals,
                "step_s": self.step_s,
                "rate_window": self.rate_window,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from immutable.analysis import AnalysisConfig, MetricConfig

        config = AnalysisConfig(**self.analysis)
        metric_configs = [MetricConfig(**{k: v for k, v in m.items() if k not in QUERY_FIELDS}) for m in self.metrics]
        judged: list[Any] = []
        async with metrics_client_for(self.backend) as metrics:
            async for event in self._judge(metrics, config, metric_configs, judged):
                yield event
                return

    async def _judge(
        self, metrics: Any, config: Any, metric_configs: list[Any], judged: list[Any]
    ) -> AsyncIterator[TriggerEvent]:
        from immutable.analysis import gate_decision, judge_interval

        for number in range(1, self.intervals + 1):
            end = self.start_at + number * self.interval_s
            await asyncio.sleep(max(0.0, end - time.time()))
            samples: dict[str, tuple[list[float], list[float]]] = {}
            try:
                for metric in self.metrics:
                    sides = []
                    for color in ("canary", "baseline"):
                        query = metrics.query(metric, **self.labels, color=color, window=self.rate_window)
                        sides.append(await metrics.series(query, end - self.interval_s, end, self.step_s))
                    samples[metric["name"]] = (sides[0], sides[1])
            except Exception as exc:  # the metrics backend itself failed: an Error, not a verdict
                yield TriggerEvent(
                    {
                        "status": "error",
                        "reason": f"metrics query failed: {exc}",
                        "intervals": [r.as_dict() for r in judged],
                    }
                )
                return
            result = judge_interval(samples, metric_configs, config)
            judged.append(result)
            decision = gate_decision(judged, self.intervals, config)
            self.log.info("interval %d/%d: score %.0f (%s)", number, self.intervals, result.score, decision.decision)
            if decision.decision != "continue":
                yield TriggerEvent(
                    {"status": decision.decision, "reason": decision.reason, "intervals": [r.as_dict() for r in judged]}
                )
                return


class ThresholdGateTrigger(BaseTrigger):
    """Watch the new color after a flip; fire at the first sustained breach or when the window ends."""

    def __init__(
        self,
        *,
        backend: dict[str, str],
        checks: list[dict[str, Any]],
        labels: dict[str, str],
        start_at: float,
        window_s: float,
        step_s: float,
        rate_window: str,
        failures_allowed: int,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.checks = checks
        self.labels = labels
        self.start_at = start_at
        self.window_s = window_s
        self.step_s = step_s
        self.rate_window = rate_window
        self.failures_allowed = failures_allowed

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "immutable.triggers.ThresholdGateTrigger",
            {
                "backend": self.backend,
                "checks": self.checks,
                "labels": self.labels,
                "start_at": self.start_at,
                "window_s": self.window_s,
                "step_s": self.step_s,
                "rate_window": self.rate_window,
                "failures_allowed": self.failures_allowed,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        planned = max(1, int(self.window_s // self.step_s))
        # The newest point a backend has may lag a little (CloudWatch's do): judge the latest one
        # within a rate window rather than exactly the one at `at`.
        lookback_s = max(self.step_s, duration_s(self.rate_window))
        limits = {c["name"]: (float(c["max"]), bool(c.get("must_have_data", True))) for c in self.checks}
        async with metrics_client_for(self.backend) as metrics:
            async for event in self._watch(metrics, planned, lookback_s, limits):
                yield event
                return

    async def _watch(
        self, metrics: Any, planned: int, lookback_s: float, limits: dict[str, tuple[float, bool]]
    ) -> AsyncIterator[TriggerEvent]:
        from immutable.gates import ThresholdState, evaluate, step

        state = ThresholdState()
        for number in range(1, planned + 1):
            at = self.start_at + number * self.step_s
            await asyncio.sleep(max(0.0, at - time.time()))
            values: dict[str, float | None] = {}
            try:
                for check in self.checks:
                    query = metrics.query(check, **self.labels, window=self.rate_window)
                    series = await metrics.series(query, at - lookback_s, at, self.step_s)
                    values[check["name"]] = series[-1] if series else None
            except Exception as exc:
                yield TriggerEvent({"status": "error", "reason": f"metrics query failed: {exc}", **state.as_dict()})
                return
            state, verdict, reason = step(
                state, evaluate(values, limits), failures_allowed=self.failures_allowed, evaluations_planned=planned
            )
            if verdict != "continue":
                yield TriggerEvent({"status": verdict, "reason": reason, "failed_at": at, **state.as_dict()})
                return
