"""How a canary gate ends: a verdict fails the task without retries; a metrics outage may retry."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from immutable.operators.gates import CanaryGateOperator, GateError, GateFailed

CANARY = {"skipped": False, "canary_version": "1.2.0", "baseline_version": "1.1.0", "region": "eu-west"}


def gate() -> CanaryGateOperator:
    return CanaryGateOperator(task_id="analysis", app="sample", region="eu-west", canary=CANARY)


class RecordingTaskInstance:
    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


def context() -> dict[str, RecordingTaskInstance]:
    return {"ti": RecordingTaskInstance()}


def test_a_failed_verdict_is_final_and_says_why_first() -> None:
    recorded = context()
    with pytest.raises(GateFailed) as failed:
        gate().execute_complete(recorded, {"status": "fail", "reason": "interval 1 of 2 scored 0", "intervals": []})
    assert isinstance(failed.value, AirflowFailException)  # Airflow does not retry it
    lines = str(failed.value).splitlines()
    assert lines[0] == "The canary of sample 1.2.0 failed its analysis in eu-west: interval 1 of 2 scored 0."
    assert lines[-2].startswith("Done about it: production traffic stays on the current version 1.1.0")
    assert lines[-1].startswith("Next: ")
    assert recorded["ti"].pushed["verdict"] == {"status": "fail", "reason": "interval 1 of 2 scored 0"}


def test_a_metrics_outage_is_no_verdict_and_may_retry() -> None:
    with pytest.raises(GateError) as error:
        gate().execute_complete(
            context(), {"status": "error", "reason": "metrics query failed: refused", "intervals": []}
        )
    assert not isinstance(error.value, AirflowFailException)
    assert "could not judge: metrics query failed: refused." in str(error.value)
    assert "failed its analysis" not in str(error.value)


def test_a_pass_returns_the_verdict_with_score_and_versions() -> None:
    event = {"status": "pass", "reason": "all 2 intervals judged", "intervals": []}
    assert gate().execute_complete(context(), event) == event | {
        "score": None,
        "canary_version": "1.2.0",
        "baseline_version": "1.1.0",
    }


def test_a_marginal_verdict_goes_on_to_the_person_with_the_score_tables() -> None:
    interval = {
        "metrics": [],
        "score": 50.0,
        "classification": "marginal",
        "reason": "1 of 2 counted metrics passed",
        "group_scores": {},
    }
    event = {"status": "marginal", "reason": "a person decides (on_marginal: ask)", "intervals": [interval]}
    verdict = gate().execute_complete(context(), event)
    assert verdict["status"] == "marginal" and verdict["score"] == 50.0
    assert verdict["score_tables"].startswith("interval 1:\n")
