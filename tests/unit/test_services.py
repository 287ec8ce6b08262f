"""The process manager stops a service together with every process it started."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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


def test_with_engine_stops_only_an_engine_it_started(tmp_path: Path, monkeypatch: Any) -> None:
    """`make test` runs pytest through `localctl with-engine`: an engine it had to start is stopped
    after the tests (passed or failed); one that already answered (the demo's) is left running. The
    engine here is a stand-in service (a sleeping process) under the real process manager."""
    import argparse

    import pytest

    from immutable import localctl

    def fake_engine() -> Service:
        return Service(name="dockerd", argv=["sleep", "300"], run_dir=tmp_path, ready=lambda: True)

    monkeypatch.setattr(localctl, "engine_service", fake_engine)
    monkeypatch.setattr(localctl, "cmd_engine", lambda args: fake_engine().start())
    for answering, command, code in [(False, ["true"], 0), (False, ["false"], 1), (True, ["true"], 0)]:
        monkeypatch.setattr(localctl, "engine_answers", lambda answering=answering: answering)
        if answering:
            fake_engine().start()
        with pytest.raises(SystemExit) as exit_:
            localctl.cmd_with_engine(argparse.Namespace(command=command))
        assert exit_.value.code == code
        assert (fake_engine().pid() is not None) == answering, (answering, command)
        fake_engine().stop()


def test_a_step_that_finds_no_engine_says_so_first(tmp_path: Path, monkeypatch: Any) -> None:
    """While the engine restarts, a step's first call fails with the cause first (and the task retries)."""
    import pytest

    from immutable.images.engine import EngineUnavailable, docker_client

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")  # nothing listens there
    with pytest.raises(EngineUnavailable, match=r"^no Docker engine answers \("):
        docker_client(timeout_s=2)
