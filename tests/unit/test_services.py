"""The process manager stops a service together with every process it started."""

from __future__ import annotations

import time
from pathlib import Path

from immutable.local.services import Service, pid_alive


def test_stop_reaches_children_in_other_sessions(tmp_path: Path) -> None:
    # The parent starts a child in its own session (as Airflow's task runner does) and a plain child.
    script = (
        "import os, subprocess, sys, time\n"
        "a = subprocess.Popen(['sleep', '300'])\n"
        "b = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        f"open({str(tmp_path / 'children')!r}, 'w').write(f'{{a.pid}} {{b.pid}}')\n"
        "time.sleep(300)\n"
    )
    marker = tmp_path / "children"
    service = Service(
        name="sleeper", argv=["python3", "-c", script], run_dir=tmp_path, ready=marker.exists, ready_timeout_s=20
    )
    assert service.start().startswith("started")
    assert service.start() == "already running"
    parent = service.pid()
    assert parent is not None
    children = [int(p) for p in marker.read_text().split()]
    assert all(pid_alive(p) for p in children)

    assert service.stop().startswith("stopped")
    time.sleep(0.5)
    assert not pid_alive(parent)
    assert not any(pid_alive(p) for p in children)
    assert service.stop() == "not running"


def test_a_service_that_never_gets_ready_is_stopped_and_reported(tmp_path: Path) -> None:
    service = Service(
        name="never",
        argv=["sh", "-c", "echo booting; sleep 300"],
        run_dir=tmp_path,
        ready=lambda: False,
        ready_timeout_s=2,
    )
    try:
        service.start()
    except RuntimeError as exc:
        assert "did not become ready" in str(exc)
        assert "booting" in str(exc)
    else:
        raise AssertionError("start() should have failed")
    assert service.pid() is None
