"""Reading a failed task's log over REST: the cause sentence comes from the exception beside the event."""

from __future__ import annotations

import httpx
import pytest

from immutable.airflow_api import AirflowApi, AirflowApiError
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


def test_a_mapped_gates_cause_is_read_from_its_own_map_index() -> None:
    """A post-flip gate runs once per region of a wave (a mapped task): its log is per map index."""

    def logs(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        if request.url.params.get("map_index") != "1":
            return httpx.Response(404, json={"detail": "TaskInstance not found"})
        detail = {"exc_type": "GateFailed", "exc_value": CAUSE}
        return httpx.Response(200, json={"content": [{"event": "failed", "level": "error", "error_detail": [detail]}]})

    api = AirflowApi("http://airflow.invalid", "admin", "pw", transport=httpx.MockTransport(logs))
    states = {"wave_1.post_flip_gate[0]": "success", "wave_1.post_flip_gate[1]": "failed"}
    assert failure_cause(api, "release_sample", "run", states) == f"wave_1.post_flip_gate[1]: {CAUSE}"


class FlakyAirflow:
    """An API whose database is locked now and then: the first trigger answers HTTP 500, after
    creating the run (`created_anyway`) or not."""

    def __init__(self, created_anyway: bool) -> None:
        self.created_anyway = created_anyway
        self.runs: dict[str, dict[str, object]] = {}
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        import json

        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        if request.method == "POST":
            self.posts += 1
            body = json.loads(request.content)
            run = {"dag_run_id": body["dag_run_id"], "conf": body["conf"], "state": "queued"}
            if body["dag_run_id"] in self.runs:
                return httpx.Response(409, json={"detail": "already exists"})
            if self.posts == 1:
                if self.created_anyway:
                    self.runs[body["dag_run_id"]] = run
                return httpx.Response(500, json={"detail": "database is locked"})
            self.runs[body["dag_run_id"]] = run
            return httpx.Response(200, json=run)
        run_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json=self.runs[run_id]) if run_id in self.runs else httpx.Response(404)


def test_a_trigger_after_a_server_error_makes_exactly_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import immutable.airflow_api

    monkeypatch.setattr(immutable.airflow_api, "SERVER_ERROR_BACKOFF_S", (0.0, 0.0))
    for created_anyway in (False, True):
        airflow = FlakyAirflow(created_anyway)
        api = AirflowApi("http://airflow.invalid", "admin", "pw", transport=httpx.MockTransport(airflow))
        run_id = api.trigger_ok("release_sample", {"version": "1.2.0"})
        assert airflow.posts == 2, created_anyway
        assert list(airflow.runs) == [run_id], created_anyway
        assert airflow.runs[run_id]["conf"] == {"version": "1.2.0"}


def test_a_server_that_keeps_failing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import immutable.airflow_api

    monkeypatch.setattr(immutable.airflow_api, "SERVER_ERROR_BACKOFF_S", (0.0, 0.0))

    def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        return httpx.Response(500, text="database is locked")

    api = AirflowApi("http://airflow.invalid", "admin", "pw", transport=httpx.MockTransport(broken))
    with pytest.raises(AirflowApiError, match="HTTP 500 database is locked"):
        api.get("/dags")


def test_a_request_the_server_was_too_busy_to_answer_in_time_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in CI: right after start, the dag-processor's writes held SQLite's lock long enough
    that the demo's unpause timed out on the client side and the demo stopped."""
    import immutable.airflow_api

    monkeypatch.setattr(immutable.airflow_api, "SERVER_ERROR_BACKOFF_S", (0.0, 0.0))
    patches: list[str] = []

    def slow_then_fine(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        patches.append(request.url.path)
        if len(patches) == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json={"dag_id": "base_image", "is_paused": False})

    api = AirflowApi("http://airflow.invalid", "admin", "pw", transport=httpx.MockTransport(slow_then_fine))
    api.unpause("base_image")
    assert patches == ["/api/v2/dags/base_image", "/api/v2/dags/base_image"]


def test_the_client_waits_longer_than_the_servers_database_lock() -> None:
    from immutable.airflow_api import REQUEST_TIMEOUT_S
    from immutable.sqlite_settings import SQLITE_BUSY_TIMEOUT_S

    assert REQUEST_TIMEOUT_S > SQLITE_BUSY_TIMEOUT_S
