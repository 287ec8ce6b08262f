"""How `immutable.compose up` reads its containers' states: what it waits for, what fails it, and
what it shows of a service that never turned healthy."""

from __future__ import annotations

from typing import Any

import pytest

from immutable.compose_stack.stack import container_logs, unhealthy


class Container:
    """What the wait reads of a docker SDK container: name, labels, attrs, logs."""

    def __init__(self, name: str, status: str, health: str | None = None, restarts: int = 0, **more: Any) -> None:
        self.name, self.id = name, name
        self.labels = {"com.docker.compose.service": more.get("service", name)}
        state: dict[str, Any] = {"Status": status, "ExitCode": more.get("exit_code", 0)}
        if health is not None:
            state["Health"] = {"Status": health, "Log": more.get("probes", [])}
        self.attrs = {"State": state, "RestartCount": restarts}

    def reload(self) -> None:
        pass

    def logs(self, tail: int) -> bytes:
        return b"started\n"


def test_a_running_service_whose_check_says_unhealthy_is_waited_for_not_failed() -> None:
    waiting, failed = unhealthy(
        [Container("triggerer", "running", "unhealthy"), Container("api", "running", "healthy")]
    )
    assert waiting == ["triggerer unhealthy"] and failed == []


def test_a_service_that_exited_or_was_restarted_by_its_policy_fails_the_wait() -> None:
    containers = [Container("scheduler", "exited", "unhealthy"), Container("worker", "running", "starting", restarts=2)]
    waiting, failed = unhealthy(containers, restarts_before={"worker": 1})
    assert failed == ["scheduler exited unhealthy", "worker running starting"] and waiting == []


def test_an_init_that_failed_fails_and_one_still_running_is_waited_for() -> None:
    waiting, failed = unhealthy(
        [
            Container("init-1", "exited", exit_code=1, service="airflow-init"),
            Container("init-2", "running", service="airflow-init"),
        ]
    )
    assert failed == ["init-1 exited 1"] and waiting == ["init-2 running"]


def test_the_logs_of_an_unhealthy_service_end_with_its_last_health_check() -> None:
    probe = {"ExitCode": 1, "Output": "TimeoutError: the triggerer's heartbeat is 90 s old\n"}
    said = container_logs([Container("triggerer", "running", "unhealthy", probes=[probe])], ["triggerer unhealthy"])
    assert said.startswith("--- triggerer\nstarted\n")
    assert "last health check exited 1: TimeoutError: the triggerer's heartbeat is 90 s old" in said


def test_the_job_probe_is_healthy_only_with_a_recent_heartbeat_and_refuses_unknown_job_types(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from immutable.compose_stack.probe import STALE_AFTER_S, main, verdict

    assert verdict("TriggererJob", 3.0) == (0, "TriggererJob: heartbeat 3s ago")
    assert verdict("TriggererJob", STALE_AFTER_S + 1)[0] == 1
    assert verdict("DagProcessorJob", None) == (1, "no running DagProcessorJob in this container yet")
    assert main(["SchedulerJob"]) == 2
    assert "DagProcessorJob,TriggererJob" in capsys.readouterr().err
