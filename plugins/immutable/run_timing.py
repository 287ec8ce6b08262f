"""Where a finished DAG run's wall time went: the work inside its task bodies on the critical path,
against what the orchestration added (process starts, DAG parses, the scheduler's loop between
tasks). Pure: the caller reads the task instances and their logs.

A task's body is the span between the end of Airflow's "Pre Execute" group in its log and the start
of its "Post Execute" group. A deferred task's body runs from its first body start to its last body
end, its wait in the triggerer included: a gate's window is the release's own work.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise


@dataclass(frozen=True)
class TaskTiming:
    """One task instance, as the scheduler and its log saw it."""

    key: str  # task_id, or task_id[map_index] for a mapped one
    task_id: str
    queued: datetime
    ended: datetime
    body_started: datetime | None  # None: the log shows no body (skipped, or logs gone)
    body_ended: datetime | None

    @property
    def body_s(self) -> float:
        if self.body_started is None or self.body_ended is None:
            return 0.0
        return max((self.body_ended - self.body_started).total_seconds(), 0.0)

    @property
    def start_cost_s(self) -> float | None:
        """Queued to the first line of its body: executor pick-up, process start, DAG parse."""
        if self.body_started is None:
            return None
        return (self.body_started - self.queued).total_seconds()


def body_span(events: list[dict[str, object]]) -> tuple[datetime | None, datetime | None]:
    """(first body start, last body end) from a task log's structured events."""
    started: datetime | None = None
    ended: datetime | None = None
    in_pre_execute = False
    for event in events:
        name, stamp = event.get("event"), event.get("timestamp")
        if not isinstance(stamp, str):
            continue
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if name == "::group::Pre Execute":
            in_pre_execute = True
        elif name == "::endgroup::" and in_pre_execute:
            in_pre_execute = False
            started = started or at
        elif name == "::group::Post Execute" and started is not None:
            ended = at
    return started, ended


def critical_path(timings: list[TaskTiming], upstream: dict[str, list[str]]) -> list[TaskTiming]:
    """The chain that decided the run's end: from the task that ended last, back through the
    upstream instance that ended last each time (the one its start waited for)."""
    by_task: dict[str, list[TaskTiming]] = {}
    for timing in timings:
        by_task.setdefault(timing.task_id, []).append(timing)
    chain = [max(timings, key=lambda t: t.ended)]
    while True:
        before = [t for task_id in upstream.get(chain[-1].task_id, []) for t in by_task.get(task_id, [])]
        before = [t for t in before if t.ended <= chain[-1].ended]
        if not before:
            return list(reversed(chain))
        chain.append(max(before, key=lambda t: t.ended))


@dataclass(frozen=True)
class RunOverhead:
    wall_s: float
    path: list[TaskTiming]
    work_s: float  # task bodies on the critical path
    start_costs_s: list[float]  # every task instance with a body

    @property
    def gaps_s(self) -> list[float]:
        """On the critical path: from a task's end to the next one's queueing (the scheduler's turn)."""
        return [(after.queued - before.ended).total_seconds() for before, after in pairwise(self.path)]

    @property
    def ratio(self) -> float:
        return self.wall_s / self.work_s if self.work_s else float("inf")

    def lines(self) -> list[str]:
        costs = sorted(self.start_costs_s)
        out = [
            f"  wall time, run start to end                          {self.wall_s:8.1f} s",
            f"  work in the task bodies on the critical path         {self.work_s:8.1f} s  ({len(self.path)} tasks)",
            f"  orchestration on the critical path                   {self.wall_s - self.work_s:8.1f} s",
            f"  wall / work                                          {self.ratio:8.2f}   (goal: at most 1.10)",
        ]
        if self.gaps_s:
            out.append(
                f"  the scheduler's turn, a task's end to the next queued, median / max  "
                f"{statistics.median(self.gaps_s):.2f} / {max(self.gaps_s):.2f} s"
            )
        if costs:
            out.append(
                f"  a task's start cost, queued to its body, median / max  {statistics.median(costs):6.2f} / "
                f"{costs[-1]:.2f} s  ({len(costs)} task instances)"
            )
        return out


def run_overhead(
    started: datetime, ended: datetime, timings: list[TaskTiming], upstream: dict[str, list[str]]
) -> RunOverhead:
    path = critical_path(timings, upstream)
    costs = [cost for cost in (t.start_cost_s for t in timings) if cost is not None]
    return RunOverhead(
        wall_s=(ended - started).total_seconds(),
        path=path,
        work_s=sum(t.body_s for t in path),
        start_costs_s=costs,
    )
