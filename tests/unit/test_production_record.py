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


def test_colors_alternate() -> None:
    assert other_color("blue") == "green"
    assert other_color("green") == "blue"
    assert other_color(None) == "blue"
