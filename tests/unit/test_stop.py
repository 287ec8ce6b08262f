"""A person's stop: which releases it applies to, how a gate waiting in the triggerer hears of it, how
a production step refuses to go on, and when a run marked failed by hand must be undone."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from immutable import platforms, triggers
from immutable.config import load_platform
from immutable.local.production import LocalProduction
from immutable.pipelines.production import ReleaseStopped, refuse_if_stopped
from immutable.rollout import runs_to_make_safe, stop_cause
from immutable.stop_listener import stop_conf_for
from tests.unit.test_gate_outages import ScriptedMetrics, events, post_flip_trigger

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def production(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalProduction:
    """The local platform's production record in a temporary folder, as the platform factory's."""
    record = LocalProduction(load_platform(ROOT / "tests" / "platform.yaml"), tmp_path)
    monkeypatch.setattr(platforms, "platform_for", lambda: SimpleNamespace(production=record))
    return record


def test_a_stop_applies_to_releases_asked_for_before_it_and_names_who_and_why() -> None:
    request = {"by": "alice", "reason": "a bad migration", "at": 1000.0}
    assert stop_cause(request, release_requested_at=999.0) == "Stopped by alice: a bad migration"
    assert stop_cause(request, release_requested_at=1000.5) is None  # asked for after the stop: goes on
    assert stop_cause(None, release_requested_at=0) is None
    assert stop_cause({"at": 5.0}, 1.0) == "Stopped by an unnamed user: no reason given"


def test_a_production_step_refuses_to_change_a_region_once_stopped(production: LocalProduction) -> None:
    plan = {"app": "sample", "version": "1.4.0", "created": "2026-11-30T12:00:00+00:00"}
    refuse_if_stopped(production, plan, "eu-west")  # no stop: goes on
    production.request_stop("sample", "eu-west", by="alice", reason="bad data", at=time.time())
    with pytest.raises(ReleaseStopped, match=r"^Stopped by alice: bad data\. The release of sample 1\.4\.0 stops"):
        refuse_if_stopped(production, plan, "eu-west")
    refuse_if_stopped(production, plan, "us-east")  # the stop was recorded for eu-west only
    refuse_if_stopped(production, {"app": "sample", "version": "1.0.0"}, "eu-west")  # a rollback's step


def test_a_waiting_gate_ends_stopped_within_seconds_of_the_request(
    production: LocalProduction, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(triggers, "STOP_POLL_S", 0.1)
    started = time.time()
    production.request_stop("sample", "eu-west", by="bob", reason="an old stop", at=started - 60)  # not ours
    trigger = post_flip_trigger(
        started, window_s=30.0, stop_watch={"app": "sample", "region": "eu-west", "since": started - 1}
    )
    stop_at = started + 0.5
    timer = threading.Timer(
        0.5, production.request_stop, args=("sample", "eu-west"), kwargs={"by": "alice", "reason": "x", "at": stop_at}
    )
    timer.start()
    try:
        [event] = events(trigger, ScriptedMetrics(lambda now: False), monkeypatch)
    finally:
        timer.cancel()
    assert event["status"] == "stopped" and event["reason"] == "Stopped by alice: x", event
    assert event["failed_at"] - stop_at < 1.0  # heard within a few polls, not at the end of the 30 s window


def test_a_gate_without_a_stop_watch_ends_with_its_verdict(
    production: LocalProduction, monkeypatch: pytest.MonkeyPatch
) -> None:
    production.request_stop("sample", "eu-west", by="alice", reason="x", at=time.time() + 60)
    [event] = events(post_flip_trigger(time.time()), ScriptedMetrics(lambda now: False), monkeypatch)
    assert event["status"] == "pass", event


def test_only_a_release_marked_failed_by_hand_is_undone_by_the_stop_dag() -> None:
    by_hand = "Dag Run's state was manually set to `failed`."
    assert stop_conf_for("release_sample", "manual__1", by_hand) == (
        "stop_sample",
        {
            "reason": "release_sample run manual__1 was marked failed by hand; undoing what it changed",
            "marked_failed_run": "manual__1",
        },
    )
    assert stop_conf_for("release_sample", "manual__1", "task_failure") is None  # its rollback task ran
    assert stop_conf_for("rollback_sample", "manual__1", by_hand) is None
    assert stop_conf_for("base_image", "manual__1", by_hand) is None


def test_the_stop_event_survives_serialization_of_the_trigger() -> None:
    watch: dict[str, Any] = {"app": "sample", "region": "eu-west", "since": 12.5}
    classpath, kwargs = post_flip_trigger(0.0, stop_watch=watch).serialize()
    assert classpath == "immutable.triggers.ThresholdGateTrigger" and kwargs["stop_watch"] == watch
    rebuilt = triggers.ThresholdGateTrigger(**kwargs)
    assert rebuilt.stop_watch == watch


def test_a_stop_makes_safe_the_holders_and_a_run_marked_failed_wherever_nobody_holds_the_region() -> None:
    release = {"holder": "manual__2", "dag_id": "release_sample"}
    rollback = {"holder": "manual__9", "dag_id": "rollback_sample"}
    leases = {"eu-west": None, "us-east": release, "ap-south": rollback}
    assert runs_to_make_safe(leases, "release_sample", None) == {"us-east": "manual__2"}
    # The run marked failed freed eu-west in its teardown before the stop came: it is still the one to undo there.
    assert runs_to_make_safe(leases, "release_sample", "manual__1") == {"eu-west": "manual__1", "us-east": "manual__2"}
