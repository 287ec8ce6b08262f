"""How a canary gate ends: a verdict fails the task without retries; a metrics outage may retry."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from immutable.operators.gates import CanaryGateOperator, GateError, GateFailed

CANARY = {"skipped": False, "canary_version": "1.2.0", "baseline_version": "1.1.0", "region": "eu-west"}


def gate() -> CanaryGateOperator:
    return CanaryGateOperator(task_id="analysis", app="sample", region="eu-west", canary=CANARY)


def test_a_failed_verdict_is_final_and_says_why_first() -> None:
    with pytest.raises(GateFailed) as failed:
        gate().execute_complete({}, {"status": "fail", "reason": "interval 1 of 2 scored 0", "intervals": []})
    assert isinstance(failed.value, AirflowFailException)  # Airflow does not retry it
    lines = str(failed.value).splitlines()
    assert lines[0] == "The canary of sample 1.2.0 failed its analysis in eu-west: interval 1 of 2 scored 0."
    assert lines[-2].startswith("Done about it: production traffic stays on the current version 1.1.0")
    assert lines[-1].startswith("Next: ")


def test_a_metrics_outage_is_no_verdict_and_may_retry() -> None:
    with pytest.raises(GateError) as error:
        gate().execute_complete({}, {"status": "error", "reason": "metrics query failed: refused", "intervals": []})
    assert not isinstance(error.value, AirflowFailException)
    assert "could not judge: metrics query failed: refused." in str(error.value)
    assert "failed its analysis" not in str(error.value)


def test_a_pass_returns_the_verdict() -> None:
    event = {"status": "pass", "reason": "all 2 intervals judged", "intervals": []}
    assert gate().execute_complete({}, event) == event
