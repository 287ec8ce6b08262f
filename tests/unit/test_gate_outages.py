"""A gate that cannot read its metrics, or whose trigger never runs, gives no verdict: it waits for the
backend (never judging a window that overlaps the outage), or says why first and is retried.

The triggers run here against a scripted metrics client (the factory's client swapped for one that
fails on chosen calls); tests/integration drives the same code against a Prometheus that is stopped
and started.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import time
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferralTimeout

from immutable import triggers  # analysis imported here: a trigger's first import takes a second
from immutable.operators.gates import CanaryGateOperator, GateError, PostFlipGateOperator

CHECK = {"name": "error_rate", "query": "errors{color='$color'}", "max": 0.05, "must_have_data": True}
METRIC = {"name": "error_rate", "query": "errors{color='$color'}", "direction": "increase", "must_have_data": True}


class ScriptedMetrics:
    """Answers `value` for each query, except while `down(now)` says the backend is down."""

    def __init__(self, down: Any, value: float = 0.01) -> None:
        self.down, self.value = down, value
        self.asked: list[tuple[float, float]] = []

    def query(self, check: dict[str, Any], **labels: str) -> str:
        return str(check["query"]).replace("$color", labels.get("color", ""))

    async def series(self, query: str, start: float, end: float, step_s: float) -> list[float]:
        if self.down(time.time()):
            raise ConnectionError("connection refused by 127.0.0.1:1")
        self.asked.append((start, end))
        points = max(1, int((end - start) / step_s))
        return [self.value + 0.0001 * (i % 3) for i in range(points)]

    async def traffic_gap(self, start: float, end: float) -> str | None:
        return None

    async def __aenter__(self) -> ScriptedMetrics:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None


def events(trigger: Any, metrics: ScriptedMetrics, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    monkeypatch.setattr(triggers, "metrics_client_for", lambda backend: metrics)

    async def collect() -> list[dict[str, Any]]:
        return [dict(event.payload) async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout=30))


def post_flip_trigger(start_at: float, **changes: Any) -> Any:
    """A post-flip gate over one second of short steps, with a short outage limit; `changes` override."""
    settings: dict[str, Any] = {
        "backend": {"kind": "scripted"},
        "checks": [CHECK],
        "labels": {"app": "sample", "region": "eu-west", "color": "green"},
        "start_at": start_at,
        "window_s": 1.0,
        "step_s": 0.125,
        "rate_window": "1s",
        "failures_allowed": 2,
        "outage_limit_s": 5.0,
        "retry_s": 0.1,
    }
    return triggers.ThresholdGateTrigger(**(settings | changes))


def canary_trigger(start_at: float) -> Any:
    """A canary gate of two 0.4 s windows, judged at once."""
    return triggers.CanaryAnalysisTrigger(
        backend={"kind": "scripted"},
        metrics=[METRIC],
        analysis={"confidence": 0.98, "min_samples": 3, "pass_score": 95, "marginal_score": 75, "group_weights": {}},
        labels={"app": "sample", "region": "eu-west"},
        start_at=start_at,
        interval_s=0.4,
        intervals=2,
        step_s=0.02,
        rate_window="1s",
        outage_limit_s=5.0,
        retry_s=0.1,
    )


def test_a_post_flip_gate_waits_out_an_outage_and_judges_only_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.time()
    outage = (started + 0.25, started + 0.7)
    metrics = ScriptedMetrics(lambda now: outage[0] <= now < outage[1])
    trigger = post_flip_trigger(started)
    [event] = events(trigger, metrics, monkeypatch)
    assert event["status"] == "pass", event
    assert event["evaluations"] == 8  # every planned evaluation happened, none was lost to the outage
    after_outage = [(start, end) for start, end in metrics.asked if end > outage[0] and end - start > 0.5]
    assert after_outage and all(start >= outage[1] for start, _ in after_outage), metrics.asked


def test_a_canary_gate_never_judges_a_window_that_overlaps_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    importlib.import_module("immutable.analysis")  # the trigger's first import of it takes about a second
    started = time.time()
    outage = (started + 0.35, started + 0.8)
    metrics = ScriptedMetrics(lambda now: outage[0] <= now < outage[1])
    trigger = canary_trigger(started)
    [event] = events(trigger, metrics, monkeypatch)
    assert event["status"] == "pass", event
    assert len(event["intervals"]) == 2
    judged_windows = [(s, e) for s, e in metrics.asked if e - s > 0.3]
    assert not [w for w in judged_windows if w[0] < outage[1] and w[1] > outage[0]], judged_windows


class RestartedLoadBalancer(ScriptedMetrics):
    """The backend answers throughout, but the load balancer was down during `gap` (a restart)."""

    def __init__(self, gap: tuple[float, float]) -> None:
        super().__init__(lambda now: False)
        self.gap = gap
        self.cleared: list[tuple[float, float]] = []  # the windows said to be judgeable

    async def traffic_gap(self, start: float, end: float) -> str | None:
        if start < self.gap[1] and end > self.gap[0] and time.time() > self.gap[0]:
            return "region eu-west's load balancer did not answer Prometheus (restarted or down)"
        self.cleared.append((start, end))
        return None

    def judged(self, length_s: float) -> list[tuple[float, float]]:
        return [(s, e) for s, e in self.cleared if abs(e - s - length_s) < 1e-6]


def test_a_canary_gate_never_judges_a_window_in_which_the_load_balancer_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    importlib.import_module("immutable.analysis")
    started = time.time()
    metrics = RestartedLoadBalancer((started + 0.15, started + 0.6))
    trigger = canary_trigger(started)
    [event] = events(trigger, metrics, monkeypatch)
    assert event["status"] == "pass", event
    assert len(event["intervals"]) == 2
    # Both judged windows start after the load balancer was back, plus a rate window.
    judged = metrics.judged(0.4)
    assert len(judged) == 2 and all(start >= metrics.gap[1] + 1.0 for start, _ in judged), judged


def test_a_post_flip_gate_waits_for_a_restarted_load_balancer(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.time()
    metrics = RestartedLoadBalancer((started + 0.25, started + 0.7))
    trigger = post_flip_trigger(started)
    [event] = events(trigger, metrics, monkeypatch)
    assert event["status"] == "pass", event
    assert event["evaluations"] == 8
    judged = metrics.judged(1.0)
    assert len(judged) == 8, judged
    assert not [(s, e) for s, e in judged if s < metrics.gap[1] and e > metrics.gap[0]], judged


def test_a_load_balancer_down_past_the_limit_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.time()
    metrics = RestartedLoadBalancer((started, started + 60))
    trigger = post_flip_trigger(started, step_s=0.1, outage_limit_s=0.3)
    [event] = events(trigger, metrics, monkeypatch)
    assert event["status"] == "error"
    assert re.match(r"the evaluation at \d\d:\d\d:\d\d cannot be made: region eu-west's load balancer", event["reason"])


def test_an_outage_past_the_limit_is_an_error_naming_the_cause_not_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = ScriptedMetrics(lambda now: True)
    trigger = post_flip_trigger(time.time(), step_s=0.1, outage_limit_s=0.3)
    [event] = events(trigger, metrics, monkeypatch)
    assert event["status"] == "error"
    assert event["reason"].startswith("the metrics backend failed: connection refused"), event
    assert event["reason"].endswith("(nothing to judge for over 0s)"), event


def test_the_outage_settings_survive_serialization() -> None:
    trigger = post_flip_trigger(
        0.0,
        backend={"kind": "prometheus", "url": "http://127.0.0.1:1"},
        labels={},
        step_s=0.1,
        outage_limit_s=12.0,
        retry_s=3.0,
    )
    path, kwargs = trigger.serialize()
    again = triggers.ThresholdGateTrigger(**kwargs)
    assert path == "immutable.triggers.ThresholdGateTrigger"
    assert (again.outage_limit_s, again.retry_s) == (12.0, 3.0)


@pytest.mark.parametrize(
    ("operator", "where"),
    [
        (CanaryGateOperator(task_id="analysis", app="sample", region="eu-west", canary={"skipped": False}), "eu-west"),
        (
            PostFlipGateOperator(task_id="post_flip", app="sample", flipped={"region": "us-east", "color": "green"}),
            "us-east",
        ),
    ],
)
def test_a_gate_whose_trigger_never_ran_says_so_first_and_is_retried(operator: Any, where: str) -> None:
    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

    with pytest.raises(GateError) as raised:
        operator.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, {})
    assert not isinstance(raised.value, AirflowFailException)  # Airflow retries it
    first = str(raised.value).splitlines()[0]
    assert first.startswith(f"The {operator.gate_name} of sample in {where} could not judge: no event came"), first
    assert "triggerer" in first
    assert isinstance(raised.value.__cause__, TaskDeferralTimeout)
