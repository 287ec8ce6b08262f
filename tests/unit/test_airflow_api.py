"""Reading a failed task's log over REST: the cause sentence comes from the exception beside the event."""

from __future__ import annotations

import httpx

from immutable.airflow_api import AirflowApi
from immutable.demo import failure_cause

CAUSE = "The canary of sample 1.2.0 failed its analysis in eu-west on error_rate: interval 1 of 2 scored 0."


def handler(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/auth/token":
        return httpx.Response(201, json={"access_token": "t"})
    assert request.headers["Authorization"] == "Bearer t"
    assert request.url.params["full_content"] == "true"
    content = [
        {"event": "judging canary 1.2.0 against baseline 1.1.0", "level": "info"},
        {
            "event": "Task failed with exception",
            "level": "error",
            "error_detail": [{"exc_type": "GateFailed", "exc_value": f"{CAUSE}\ninterval 1:\nmetric ..."}],
        },
    ]
    return httpx.Response(200, json={"content": content, "continuation_token": None})


def test_task_log_shows_the_exception_and_the_demo_finds_the_cause() -> None:
    api = AirflowApi("http://airflow.invalid", "admin", "pw", transport=httpx.MockTransport(handler))
    log = api.task_log("release_sample", "run", "canary.analysis")
    assert "INFO    judging canary" in log
    assert f"GateFailed: {CAUSE}" in log
    cause = failure_cause(api, "release_sample", "run", {"validate": "success", "canary.analysis": "failed"})
    assert cause == f"canary.analysis: {CAUSE}"


def test_a_failed_gate_is_named_before_a_failed_cleanup() -> None:
    def logs(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        failing = "rollback" if "/taskInstances/rollback/" in request.url.path else "canary.analysis"
        detail = (
            {"exc_type": "NotFound", "exc_value": "404 Client Error"}
            if failing == "rollback"
            else {"exc_type": "GateFailed", "exc_value": CAUSE}
        )
        content = [{"event": "Task failed with exception", "level": "error", "error_detail": [detail]}]
        return httpx.Response(200, json={"content": content})

    api = AirflowApi("http://airflow.invalid", "admin", "pw", transport=httpx.MockTransport(logs))
    states = {"rollback": "failed", "canary.analysis": "failed", "record_release": "upstream_failed"}
    assert failure_cause(api, "release_sample", "run", states) == f"canary.analysis: {CAUSE}"
