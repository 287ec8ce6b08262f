"""The embedded Airflow's supervisor, with a stand-in `airflow` program (a shell script) so it runs
in seconds: a component that dies comes back after its back-off, the exit is logged with its cause
and counted in the status file, and stopping the supervisor stops every component."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from immutable.local.services import pid_alive
from immutable.local.supervisor import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    STEADY_AFTER_S,
    exit_cause,
    next_backoff,
    read_status,
)

ROOT = Path(__file__).resolve().parents[2]
FAKE_AIRFLOW = "#!/bin/sh\n[ \"$1 $2\" = 'db migrate' ] && exit 0\nexec sleep 600\n"


def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_dead_component_comes_back_and_stopping_stops_them_all(tmp_path: Path) -> None:
    airflow = tmp_path / "airflow"
    airflow.write_text(FAKE_AIRFLOW)
    airflow.chmod(0o755)
    run_dir = tmp_path / "run"
    log = (tmp_path / "supervisor.log").open("w")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "immutable.local.supervisor", "--run-dir", str(run_dir), "--airflow", str(airflow)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ | {"PYTHONPATH": str(ROOT / "plugins")},
        start_new_session=True,
    )
    try:
        wait_for(lambda: all(c.get("pid") for c in read_status(run_dir).values()) and len(read_status(run_dir)) == 4)
        first = read_status(run_dir)["triggerer"]
        os.kill(first["pid"], signal.SIGKILL)
        wait_for(
            lambda: read_status(run_dir)["triggerer"]["restarts"] == 1 and read_status(run_dir)["triggerer"]["pid"]
        )
        again = read_status(run_dir)["triggerer"]
        assert again["pid"] != first["pid"]
        assert again["last_exit"] == "killed by signal 9 (SIGKILL)"
        assert read_status(run_dir)["scheduler"]["restarts"] == 0
        text = (tmp_path / "supervisor.log").read_text()
        assert "triggerer killed by signal 9 (SIGKILL) after" in text and "restart 1 in 1s" in text
        children = [c["pid"] for c in read_status(run_dir).values()]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=30)
        log.close()
    assert not any(pid_alive(pid) for pid in children), "a component outlived its supervisor"
    assert not any(c["running"] for c in read_status(run_dir).values())


def test_the_back_off_grows_while_a_component_keeps_dying_and_resets_after_a_steady_run() -> None:
    assert next_backoff(2.0, BACKOFF_FIRST_S) == 2 * BACKOFF_FIRST_S
    assert next_backoff(2.0, BACKOFF_MAX_S) == BACKOFF_MAX_S
    assert next_backoff(STEADY_AFTER_S, 32.0) == BACKOFF_FIRST_S
    assert exit_cause(-9) == "killed by signal 9 (SIGKILL)"
    assert exit_cause(3) == "exited with code 3"


def test_status_shows_each_component_as_airflow_reports_it_with_pid_and_restarts() -> None:
    from immutable.localctl import component_lines

    health = {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-11-30T10:00:00+00:00"},
        "triggerer": {"status": "unhealthy", "latest_triggerer_heartbeat": "2026-11-30T09:59:00+00:00"},
        "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-11-30T10:00:05+00:00"},
    }
    supervised: dict[str, dict[str, Any]] = {
        "api-server": {"pid": 10, "restarts": 0},
        "scheduler": {"pid": 11, "restarts": 0},
        "dag-processor": {"pid": 12, "restarts": 0},
        "triggerer": {"pid": None, "restarts": 3, "last_exit": "killed by signal 9 (SIGKILL)"},
    }
    now = 1796032803.0  # 2026-11-30T10:00:03Z
    assert component_lines(health, supervised, now) == [
        "airflow api-server: healthy (answers); pid 10, restarts 0",
        "airflow scheduler: healthy, heartbeat 3s ago; pid 11, restarts 0",
        "airflow dag-processor: healthy, heartbeat 0s ago; pid 12, restarts 0",
        "airflow triggerer: unhealthy, heartbeat 63s ago; not running, restarts 3, last killed by signal 9 (SIGKILL)",
    ]
    assert (
        component_lines({}, {}, now)[1]
        == "airflow scheduler: unknown (Airflow's API does not answer); not running, restarts 0"
    )
