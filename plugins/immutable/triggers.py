"""Deferrable gates: async, JSON-serialisable triggers that run in Airflow's triggerer.

They only poll the platform's metrics and judge with the pure functions of `analysis` and
`gates`; acting on the verdict (flipping back, removing fleets) is the operator's job once it
resumes. Times are absolute (epoch seconds), so a trigger re-created after a scheduler or
triggerer restart carries on where the gate was, judging the intervals already past at once.

A metrics backend that stops answering, or a load balancer that stopped serving (a restart: no
traffic, counters reset), is not evidence about the release: the gate waits for both (up to
`outage_limit_s`), never judges a window that overlaps the outage (it would read as missing data),
and starts its next window one rate window after they are back (a rate needs that long). Past the
limit it fires an "error" event, which the operator turns into a retry, never into a verdict.

A gate of a release also watches for a person's stop (stop_<app>, see `stop_watch`): it then fires a
"stopped" event naming who and why, within STOP_POLL_S, whatever the gate was waiting for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from immutable.metric_timing import duration_s
from immutable.platforms import metrics_client_for

QUERY_FIELDS = ("query", "cloudwatch")  # how a check is fetched, not how it is judged
BACKEND_OUTAGE_LIMIT_S = 90.0  # seconds a gate waits for its metrics backend before it gives up (no verdict)
BACKEND_RETRY_S = 5.0  # seconds between asks while the backend does not answer
STOP_POLL_S = 2.0  # seconds between looks at the app's production record for a person's stop


def _clock(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(epoch_s))


class _GateTrigger(BaseTrigger):
    """What both gates share: the wait for a metrics backend that stopped answering, and the watch for
    a person's stop. `stop_watch` ({"app", "region", "since"}: the release's request time) is None for
    gates that no stop concerns (a rollback's)."""

    def __init__(
        self,
        *,
        outage_limit_s: float = BACKEND_OUTAGE_LIMIT_S,
        retry_s: float = BACKEND_RETRY_S,
        stop_watch: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.outage_limit_s = outage_limit_s
        self.retry_s = retry_s
        self.stop_watch = stop_watch

    def _outage_settings(self) -> dict[str, Any]:
        return {"outage_limit_s": self.outage_limit_s, "retry_s": self.retry_s, "stop_watch": self.stop_watch}

    async def _first_of(self, verdicts: AsyncIterator[TriggerEvent]) -> TriggerEvent | None:
        """The gate's first event, or a "stopped" one if a person stops the release first."""
        verdict = asyncio.ensure_future(anext(verdicts, None))
        stop = asyncio.ensure_future(self._stop_cause())
        try:
            await asyncio.wait({verdict, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (verdict, stop):
                if not waiting.done():
                    waiting.cancel()
        if verdict.done() and not verdict.cancelled():
            return verdict.result()
        self.log.warning("%s: the gate ends here", stop.result())
        return TriggerEvent({"status": "stopped", "reason": stop.result(), "failed_at": time.time()})

    async def _stop_cause(self) -> str:
        """Returns once a person has stopped the release (never, without a stop_watch)."""
        if self.stop_watch is None:
            await asyncio.Event().wait()
        from immutable.platforms import platform_for

        watch = self.stop_watch or {}
        production = None
        while True:
            try:
                production = production or (await asyncio.to_thread(platform_for)).production
                cause = await asyncio.to_thread(
                    production.stop_requested, watch["app"], watch["region"], float(watch["since"])
                )
            except Exception as exc:  # the record could not be read this time: the gate goes on
                self.log.warning("could not look for a stop request: %s", exc)
                cause = None
            if cause:
                return str(cause)
            await asyncio.sleep(STOP_POLL_S)

    async def _sleep_watching(self, metrics: Any, probe: Any, until: float, step_s: float) -> Exception | None:
        """Sleep until `until`, asking the backend every `retry_s`: a window it was silent in must not be
        judged (its gap would read as missing data). Returns the first failure, or None."""
        while (left := until - time.time()) > 0:
            await asyncio.sleep(min(left, self.retry_s))
            now = time.time()
            if now >= until:
                break
            try:
                await metrics.series(probe, now - step_s, now, step_s)
            except Exception as exc:
                return exc
        return None

    async def _wait_until_judgeable(self, metrics: Any, probe: Any, step_s: float, cause: str) -> float | None:
        """The time the backend answers again and the load balancer serves, or None if that does not
        happen within the limit."""
        self.log.warning(
            "%s. No verdict from missing data: waiting up to %.0fs for it to answer; "
            "the window that overlaps this outage is not judged",
            cause,
            self.outage_limit_s,
        )
        deadline = time.time() + self.outage_limit_s
        while time.time() < deadline:
            await asyncio.sleep(self.retry_s)
            now = time.time()
            try:
                await metrics.series(probe, now - step_s, now, step_s)
                gap = await metrics.traffic_gap(now - step_s, now)
            except Exception as exc:
                self.log.warning("the metrics backend still fails: %s", exc)
                continue
            if gap:
                self.log.warning("still no traffic to judge: %s", gap)
                continue
            self.log.info("the metrics backend answers and the load balancer serves again; the next window starts now")
            return now
        return None


class CanaryAnalysisTrigger(_GateTrigger):
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
        data_delay_s: float = 0.0,
        outage_limit_s: float = BACKEND_OUTAGE_LIMIT_S,
        retry_s: float = BACKEND_RETRY_S,
        stop_watch: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(outage_limit_s=outage_limit_s, retry_s=retry_s, stop_watch=stop_watch)
        self.backend = backend
        self.metrics = metrics
        self.analysis = analysis
        self.labels = labels
        self.start_at = start_at
        self.interval_s = interval_s
        self.intervals = intervals
        self.step_s = step_s
        self.rate_window = rate_window
        self.data_delay_s = data_delay_s  # the backend's points come this late: judge each interval then

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
                "data_delay_s": self.data_delay_s,
                **self._outage_settings(),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from immutable.analysis import AnalysisConfig, MetricConfig

        config = AnalysisConfig(**self.analysis)
        metric_configs = [MetricConfig(**{k: v for k, v in m.items() if k not in QUERY_FIELDS}) for m in self.metrics]
        async with metrics_client_for(self.backend) as metrics:
            event = await self._first_of(self._judge(metrics, config, metric_configs))
            if event is not None:
                yield event

    async def _samples(self, metrics: Any, end: float) -> dict[str, tuple[list[float], list[float]]]:
        samples = {}
        for metric in self.metrics:
            sides = []
            for color in ("canary", "baseline"):
                query = metrics.query(metric, **self.labels, color=color, window=self.rate_window)
                sides.append(await metrics.series(query, end - self.interval_s, end, self.step_s))
            samples[metric["name"]] = (sides[0], sides[1])
        return samples

    async def _judge(self, metrics: Any, config: Any, metric_configs: list[Any]) -> AsyncIterator[TriggerEvent]:
        from immutable.analysis import gate_decision, judge_interval

        judged: list[Any] = []
        window_start = self.start_at
        probe = metrics.query(self.metrics[0], **self.labels, color="canary", window=self.rate_window)
        while len(judged) < self.intervals:
            end = window_start + self.interval_s
            failure = await self._sleep_watching(metrics, probe, end + self.data_delay_s, self.step_s)
            cause = f"the metrics backend failed: {failure}" if failure else None
            if cause is None:
                try:
                    samples = await self._samples(metrics, end)
                    gap = await metrics.traffic_gap(window_start, end)
                except Exception as exc:
                    cause = f"the metrics backend failed: {exc}"
                else:
                    cause = gap and f"the window ending {_clock(end)} cannot be judged: {gap}"
            if cause is not None:  # no evidence either way: the backend or the load balancer was down
                recovered_at = await self._wait_until_judgeable(metrics, probe, self.step_s, cause)
                if recovered_at is None:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "reason": f"{cause} (nothing to judge for over {self.outage_limit_s:.0f}s)",
                            "intervals": [r.as_dict() for r in judged],
                        }
                    )
                    return
                # A backend (or load balancer) back from an outage has no rate yet for its first rate window.
                window_start = recovered_at + duration_s(self.rate_window)
                continue
            result = judge_interval(samples, metric_configs, config)
            judged.append(result)
            decision = gate_decision(judged, self.intervals, config)
            self.log.info(
                "interval %d/%d: score %.0f (%s)", len(judged), self.intervals, result.score, decision.decision
            )
            if decision.decision != "continue":
                yield TriggerEvent(
                    {"status": decision.decision, "reason": decision.reason, "intervals": [r.as_dict() for r in judged]}
                )
                return
            window_start = end


class ThresholdGateTrigger(_GateTrigger):
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
        data_delay_s: float = 0.0,
        lookback_s: float | None = None,
        outage_limit_s: float = BACKEND_OUTAGE_LIMIT_S,
        retry_s: float = BACKEND_RETRY_S,
        stop_watch: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(outage_limit_s=outage_limit_s, retry_s=retry_s, stop_watch=stop_watch)
        self.backend = backend
        self.checks = checks
        self.labels = labels
        self.start_at = start_at
        self.window_s = window_s
        self.step_s = step_s
        self.rate_window = rate_window
        self.failures_allowed = failures_allowed
        # The backend's points come this late: the evaluation of moment `at` happens at `at + delay`.
        self.data_delay_s = data_delay_s
        # The newest point within this look-back is the value judged (a backend's newest may lag a little).
        self.lookback_s = lookback_s if lookback_s is not None else max(step_s, duration_s(rate_window))

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
                "data_delay_s": self.data_delay_s,
                "lookback_s": self.lookback_s,
                **self._outage_settings(),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        planned = max(1, int(self.window_s // self.step_s))
        lookback_s = self.lookback_s
        limits = {c["name"]: (float(c["max"]), bool(c.get("must_have_data", True))) for c in self.checks}
        async with metrics_client_for(self.backend) as metrics:
            event = await self._first_of(self._watch(metrics, planned, lookback_s, limits))
            if event is not None:
                yield event

    async def _watch(
        self, metrics: Any, planned: int, lookback_s: float, limits: dict[str, tuple[float, bool]]
    ) -> AsyncIterator[TriggerEvent]:
        from immutable.gates import ThresholdState, evaluate, step

        state = ThresholdState()
        evaluated = 0
        at = self.start_at
        while evaluated < planned:
            at += self.step_s
            await asyncio.sleep(max(0.0, at + self.data_delay_s - time.time()))
            values: dict[str, float | None] = {}
            try:
                for check in self.checks:
                    query = metrics.query(check, **self.labels, window=self.rate_window)
                    series = await metrics.series(query, at - lookback_s, at, self.step_s)
                    values[check["name"]] = series[-1] if series else None
                gap = await metrics.traffic_gap(at - lookback_s, at)
                cause = gap and f"the evaluation at {_clock(at)} cannot be made: {gap}"
            except Exception as exc:
                cause = f"the metrics backend failed: {exc}"
            if cause:
                probe = metrics.query(self.checks[0], **self.labels, window=self.rate_window)
                recovered_at = await self._wait_until_judgeable(metrics, probe, self.step_s, cause)
                if recovered_at is None:
                    reason = f"{cause} (nothing to judge for over {self.outage_limit_s:.0f}s)"
                    yield TriggerEvent({"status": "error", "reason": reason, **state.as_dict()})
                    return
                # The next evaluation's look-back lies wholly after the outage, and after the first rate
                # window the backend needs to compute a rate again.
                at = recovered_at + 2 * lookback_s - self.step_s
                continue
            evaluated += 1
            state, verdict, reason = step(
                state, evaluate(values, limits), failures_allowed=self.failures_allowed, evaluations_planned=planned
            )
            if verdict != "continue":
                yield TriggerEvent({"status": verdict, "reason": reason, "failed_at": at, **state.as_dict()})
                return
