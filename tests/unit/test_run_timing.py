"""Where a run's wall time went (immutable.run_timing): task bodies from their logs, the critical path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from immutable.run_timing import TaskTiming, body_span, critical_path, run_overhead

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).isoformat().replace("+00:00", "Z")


def timing(task_id: str, queued: float, body: tuple[float, float] | None, ended: float, key: str = "") -> TaskTiming:
    return TaskTiming(
        key=key or task_id,
        task_id=task_id,
        queued=at(queued),
        ended=at(ended),
        body_started=at(body[0]) if body else None,
        body_ended=at(body[1]) if body else None,
    )


def test_a_body_runs_from_the_end_of_pre_execute_to_the_start_of_post_execute_across_a_deferral() -> None:
    events: list[dict[str, object]] = [
        {"event": "log source details"},  # no timestamp: ignored
        {"timestamp": stamp(0.0), "event": "::group::Pre Execute"},
        {"timestamp": stamp(0.4), "event": "Worker startup parse complete"},
        {"timestamp": stamp(0.5), "event": "::endgroup::"},
        {"timestamp": stamp(1.0), "event": "Pausing task as DEFERRED"},
        # resumed by its trigger, in a new process: a second Pre Execute
        {"timestamp": stamp(30.0), "event": "::group::Pre Execute"},
        {"timestamp": stamp(30.6), "event": "::endgroup::"},
        {"timestamp": stamp(31.0), "event": "::group::Post Execute"},
        {"timestamp": stamp(31.1), "event": "::endgroup::"},
    ]
    assert body_span(events) == (at(0.5), at(31.0))
    assert body_span([{"timestamp": stamp(0), "event": "::group::Pre Execute"}]) == (None, None)


def test_the_critical_path_follows_the_upstream_that_ended_last_through_mapped_instances() -> None:
    upstream = {"copy": ["bake"], "gate": ["copy", "bake"], "record": ["gate"]}
    timings = [
        timing("bake", 0, (0.5, 10), 10.2),
        timing("copy", 11, (11.4, 13), 13.1, key="copy[0]"),
        timing("copy", 11, (11.4, 15), 15.1, key="copy[1]"),  # the slower region decides
        timing("gate", 16, (16.3, 40), 40.1),
        timing("record", 41, (41.2, 42), 42.1),
    ]
    assert [t.key for t in critical_path(timings, upstream)] == ["bake", "copy[1]", "gate", "record"]


def test_overhead_is_the_wall_time_the_bodies_on_the_path_do_not_explain() -> None:
    upstream = {"b": ["a"]}
    timings = [timing("a", 0, (0.5, 10.5), 10.6), timing("b", 11.6, (12.0, 20.0), 20.1), timing("skipped", 5, None, 5)]
    overhead = run_overhead(at(0), at(22), timings, upstream)
    assert overhead.work_s == 18.0 and overhead.wall_s == 22.0
    assert round(overhead.ratio, 3) == round(22 / 18, 3)
    assert [round(gap, 2) for gap in overhead.gaps_s] == [1.0]  # a's end to b's queueing
    assert sorted(round(cost, 2) for cost in overhead.start_costs_s) == [0.4, 0.5]  # the skipped one has none
    assert any("wall / work" in line and "1.22" in line for line in overhead.lines())
