"""The demo's live progress: bars against the last run's durations, and a gate's latest score."""

from __future__ import annotations

import io

from immutable.demo import BAR_WIDTH, StatusLine, latest_score, progress


def test_a_first_run_shows_the_time_so_far() -> None:
    assert progress(42.4, None) == "42s"
    assert progress(42.4, 0.0) == "42s"


def test_the_bar_fills_against_the_usual_duration_and_never_says_done() -> None:
    half = progress(60.0, 120.0)
    assert half.startswith("[" + "#" * (BAR_WIDTH // 2) + "." * (BAR_WIDTH // 2) + "]")
    assert " 50%" in half and "60s of ~120s" in half
    late = progress(500.0, 120.0)
    assert "99%" in late and "." in late.split("]")[0]  # slower than usual: not full until Airflow says so


def test_the_latest_judged_interval_is_the_score() -> None:
    log = "\n".join(
        [
            "INFO    judging canary 1.2.0 against baseline 1.1.0: 2 interval(s) of 20s after 5s warmup, 2 metric(s)",
            "INFO    interval 1/2: score 100 (continue)",
            "INFO    interval 2/2: score 0 (fail)",
        ]
    )
    assert latest_score(log) == "interval 2/2: score 0 (fail)"
    assert latest_score(log.rsplit("\n", 1)[0]) == "interval 1/2: score 100 (continue)"
    assert latest_score("INFO    waiting") is None


def test_the_status_line_stays_out_of_logs() -> None:
    out = io.StringIO()  # not a terminal: CI logs get plain lines only
    status = StatusLine(out)
    status.draw("build [####....] 50%")
    status.clear()
    assert out.getvalue() == ""


def test_the_yardstick_is_the_last_run_in_which_the_task_did_real_work() -> None:
    from immutable.demo import yardsticks

    newest = [
        {"task_id": "canary.analysis", "map_index": -1, "state": "success", "duration": 0.4},  # skipped: first release
        {"task_id": "bake", "map_index": -1, "state": "success", "duration": 50.0},
        {"task_id": "copy_to_region", "map_index": 1, "state": "failed", "duration": 9.0},
    ]
    older = [
        {"task_id": "canary.analysis", "map_index": -1, "state": "success", "duration": 31.0},
        {"task_id": "bake", "map_index": -1, "state": "success", "duration": 70.0},
        {"task_id": "copy_to_region", "map_index": 1, "state": "success", "duration": 6.0},
    ]
    assert yardsticks([newest, older]) == {"canary.analysis": 31.0, "bake": 50.0, "copy_to_region[1]": 6.0}
    assert yardsticks([]) == {}
