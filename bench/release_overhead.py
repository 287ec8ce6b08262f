"""Release overhead on the running scheduler: the last successful release run of the demo's Airflow
(standalone, LocalExecutor; run `make demo` first), read over its REST API. Prints the run's wall
time against the work inside its task bodies on the critical path, and each task's start cost.

    .venv/bin/python bench/release_overhead.py [--dag release_sample] [--run RUN_ID] [--if-demo-runs]

`make bench` passes --if-demo-runs: with no demo Airflow answering, or no good release on it, it
says so and how to get the figure instead of failing. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
from datetime import datetime

import httpx

from immutable.airflow_api import AirflowApi, AirflowApiError
from immutable.localctl import AIRFLOW_PORT, AIRFLOW_USER, airflow_password
from immutable.run_timing import TaskTiming, body_span, run_overhead


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dag", default="release_sample")
    parser.add_argument("--run", help="a run id; default: the DAG's latest successful run")
    parser.add_argument("--if-demo-runs", action="store_true", help="no demo or no good release: say so, exit 0")
    args = parser.parse_args()
    try:
        measure(args)
    except httpx.TransportError as exc:
        why = f"the demo's Airflow at 127.0.0.1:{AIRFLOW_PORT} does not answer: {exc}"
    except (NoGoodRelease, AirflowApiError) as exc:
        why = str(exc)
    else:
        return
    if not args.if_demo_runs:
        raise SystemExit(why)
    print(f"\nrelease overhead on the running scheduler: not measured here ({why}).")
    print("  It reads the demo's last good release: `make demo`, then `make bench` or `make bench-release`.")


class NoGoodRelease(RuntimeError):
    pass


def measure(args: argparse.Namespace) -> None:
    api = AirflowApi(f"http://127.0.0.1:{AIRFLOW_PORT}", AIRFLOW_USER, airflow_password())
    if args.run:
        run = api.get(f"/dags/{args.dag}/dagRuns/{args.run}")
    else:  # the latest that released (a re-release with nothing to do succeeds too, having skipped all)
        runs = api.get(f"/dags/{args.dag}/dagRuns", state="success", order_by="-end_date", limit=20)["dag_runs"]
        released = (r for r in runs if api.task_states(args.dag, r["dag_run_id"]).get("record_release") == "success")
        run = next(released, None)
        if run is None:
            raise NoGoodRelease(f"{args.dag} has no successful release on this Airflow; run `make demo` first")
    run_id = run["dag_run_id"]
    upstream: dict[str, list[str]] = {}
    for task in api.get(f"/dags/{args.dag}/tasks")["tasks"]:
        for downstream in task["downstream_task_ids"]:
            upstream.setdefault(downstream, []).append(task["task_id"])
    instances = api.get(f"/dags/{args.dag}/dagRuns/{run_id}/taskInstances", limit=500)["task_instances"]
    timings = []
    for ti in instances:
        if ti["state"] != "success" or not ti["queued_when"] or not ti["end_date"]:
            continue  # skipped (the rollback of a good release): no work, no start
        events = api.task_log_events(args.dag, run_id, ti["task_id"], ti["try_number"], ti["map_index"])
        started, ended = body_span(events)
        mapped = ti["map_index"] >= 0
        timings.append(
            TaskTiming(
                key=f"{ti['task_id']}[{ti['map_index']}]" if mapped else ti["task_id"],
                task_id=ti["task_id"],
                # A deferred task is queued again when its trigger fires: its first queueing is
                # just before its start.
                queued=min(at(ti["queued_when"]), at(ti["start_date"])),
                ended=at(ti["end_date"]),
                body_started=started,
                body_ended=ended,
            )
        )
    overhead = run_overhead(at(run["start_date"]), at(run["end_date"]), timings, upstream)
    print(f"\nrelease overhead on the running scheduler: {args.dag} run {run_id} ({run.get('conf')})")
    for line in overhead.lines():
        print(line)
    print("  critical path (body s / start cost s):")
    for timing in overhead.path:
        cost = timing.start_cost_s
        print(f"    {timing.key:<34} {timing.body_s:7.2f}  {'-' if cost is None else f'{cost:5.2f}'}")


if __name__ == "__main__":
    main()
