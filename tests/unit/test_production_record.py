"""The local platform's production record: what a flip and a flip back leave behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from immutable.config import load_platform
from immutable.local.production import LeaseHeld, LocalProduction, other_color

ROOT = Path(__file__).resolve().parents[2]
A = {"color": "blue", "version": "1.0.0", "digest": "sha256:a"}
B = {"color": "green", "version": "1.1.0", "digest": "sha256:b"}
C = {"color": "blue", "version": "1.2.0", "digest": "sha256:c"}


@pytest.fixture()
def production(tmp_path: Path) -> LocalProduction:
    return LocalProduction(load_platform(ROOT / "tests" / "platform.yaml"), tmp_path)


def test_a_flip_keeps_the_previous_release_with_its_retirement_time(production: LocalProduction) -> None:
    production.note_flip("app", "r", live=A, previous=None, rollback_window_s=60, run_id="1")
    production.note_flip("app", "r", live=B, previous=A, rollback_window_s=60, run_id="2")
    record = production.record("app", "r")
    assert record["live"]["version"] == "1.1.0"
    assert record["previous"]["version"] == "1.0.0"
    assert record["previous"]["retire_after"] > record["live"]["since"]
    assert record["previous_release"]["digest"] == "sha256:a"


def test_a_flip_back_restores_the_record_as_before_the_flip(production: LocalProduction) -> None:
    production.note_flip("app", "r", live=A, previous=None, rollback_window_s=60, run_id="1")
    production.note_flip("app", "r", live=B, previous=A, rollback_window_s=60, run_id="2")
    production.note_flip("app", "r", live=C, previous=B, rollback_window_s=60, run_id="3")
    production.note_flip_back("app", "r", live=B)
    record = production.record("app", "r")
    assert record["live"]["version"] == "1.1.0"
    assert record["previous"]["version"] == "1.0.0"
    assert record["previous_release"]["version"] == "1.0.0"


def test_one_lease_holder_at_a_time(production: LocalProduction) -> None:
    production.acquire("app", "r", "release-run")
    production.acquire("app", "r", "release-run")  # the holder may retry
    with pytest.raises(LeaseHeld, match="release-run is changing app's traffic in r"):
        production.acquire("app", "r", "rollback-run")
    assert production.release("app", "r", "rollback-run") is False
    assert production.release("app", "r", "release-run") is True
    production.acquire("app", "r", "rollback-run")


def test_a_lease_left_by_a_run_that_ended_is_taken_over_and_says_whose_it_was(
    production: LocalProduction, caplog: pytest.LogCaptureFixture
) -> None:
    states = {"crashed-run": "failed", "live-run": "running"}
    asked: list[tuple[str, str]] = []

    def run_state(dag_id: str, run_id: str) -> str | None:
        asked.append((dag_id, run_id))
        return states.get(run_id)

    production.acquire("app", "r", "live-run", dag_id="release_app", run_state=run_state)
    with pytest.raises(LeaseHeld) as held:
        production.acquire("app", "r", "rollback-run", dag_id="rollback_app", run_state=run_state)
    message = str(held.value)
    assert message.startswith(
        "live-run is changing app's traffic in r: live-run of release_app (running) holds it since "
    )
    assert " UTC, 0 min ago" in message
    assert asked == [("release_app", "live-run")]

    production.release("app", "r", "live-run")
    production.acquire("app", "r", "crashed-run", dag_id="release_app", run_state=run_state)
    with caplog.at_level("WARNING"):
        production.acquire("app", "r", "next-run", dag_id="release_app", run_state=run_state)
    assert production.record("app", "r")["lease"]["holder"] == "next-run"
    assert "the lease of crashed-run of release_app (since " in caplog.text
    assert "was left by a run that has ended (failed)" in caplog.text


def test_a_lease_whose_run_cannot_be_read_stands(production: LocalProduction) -> None:
    production.acquire("app", "r", "gone-run", dag_id="release_app")
    with pytest.raises(LeaseHeld, match=r"gone-run of release_app \(state unknown\) holds it"):
        production.acquire("app", "r", "next-run", dag_id="release_app", run_state=lambda dag_id, run_id: None)


def test_the_lease_decision() -> None:
    from immutable.production_state import LEASE_STALE_S, lease_decision

    lease = {"holder": "a", "dag_id": "release_x", "since": 1000.0}
    assert lease_decision(None, "b", 2000.0, None)[0] == "take"
    assert lease_decision(lease, "a", 2000.0, None) == ("take", "already ours")
    assert lease_decision(lease, "b", 2000.0, "running")[0] == "held"
    assert lease_decision(lease, "b", 2000.0, "queued")[0] == "held"
    assert lease_decision(lease, "b", 2000.0, None)[0] == "held"
    assert lease_decision(lease, "b", 2000.0, "success")[0] == "take"
    assert lease_decision(lease, "b", 1000.0 + LEASE_STALE_S, "running")[0] == "take"


def test_colors_alternate() -> None:
    assert other_color("blue") == "green"
    assert other_color("green") == "blue"
    assert other_color(None) == "blue"


def test_a_runs_state_reads_as_airflow_names_it_so_a_live_holder_keeps_its_lease(
    production: LocalProduction, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Task SDK answers with its own enum, whose str() is "DagRunState.RUNNING": read as is, a
    running holder would look ended and lose its lease, and a stop would wait for a run that ended."""
    from airflow.sdk.api.datamodels._generated import DagRunState
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from immutable.pipelines.production import run_state

    states = {"live-run": DagRunState.RUNNING, "ended-run": DagRunState.FAILED}
    monkeypatch.setattr(RuntimeTaskInstance, "get_dagrun_state", staticmethod(lambda dag_id, run_id: states[run_id]))
    assert (run_state("release_app", "live-run"), run_state("release_app", "ended-run")) == ("running", "failed")
    production.acquire("app", "r", "live-run", dag_id="release_app", run_state=run_state)
    with pytest.raises(LeaseHeld, match=r"live-run of release_app \(running\) holds it"):
        production.acquire("app", "r", "next-run", dag_id="release_app", run_state=run_state)


def test_every_image_a_record_names_is_kept_from_retention() -> None:
    from immutable.production_state import digests_named

    record = {
        "live": {"color": "green", "version": "1.1.0", "digest": "sha256:live"},
        "previous": {"color": "blue", "version": "1.0.0", "digest": "sha256:kept", "retire_after": 1.0},
        "previous_release": {"version": "0.9.0", "digest": "sha256:earlier"},
        "before_flip": {"live": {"digest": "sha256:live"}, "previous": {"digest": "sha256:older"}},
        "lease": {"holder": "manual__1"},
    }
    assert digests_named(record) == {
        "sha256:live": "live",
        "sha256:kept": "previous",
        "sha256:earlier": "previous release",
        "sha256:older": "before flip previous",
    }
    assert digests_named({}) == {}
