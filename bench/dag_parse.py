"""How long each DAG file takes to parse, as the dag-processor does it, and as a task's own process
does it (Airflow's parsing context names its DAG: only its app's spec is read), with 1 and with 200
generated apps (1,000 too without IMMUTABLE_BENCH_QUICK). Prints figures only."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from airflow.dag_processing.dagbag import DagBag
from bench_images import QUICK

ROOT = Path(__file__).resolve().parents[1]
RELEASES = ROOT / "dags" / "releases.py"
PARSING_CONTEXT = "_AIRFLOW_PARSING_CONTEXT_DAG_ID"  # what Airflow sets in a task's process


def parse_ms(path: Path, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        DagBag(dag_folder=str(path))
        times.append((time.monotonic() - started) * 1000)
    return statistics.median(times)


CHILD = """
import json, sys, time
started = time.monotonic()
from airflow.dag_processing.dagbag import DagBag
imported = time.monotonic()
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"parse_ms": (time.monotonic() - imported) * 1000, "dags": len(bag.dag_ids)}))
"""


def in_a_fresh_process(env: dict[str, str]) -> tuple[float, float, int]:
    """(wall ms from process start to the DAG built, parse ms, DAGs built), as a task's process pays it."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(RELEASES)], env=os.environ | env, capture_output=True, text=True, check=True
    )
    wall_ms = (time.monotonic() - started) * 1000
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return wall_ms, figures["parse_ms"], figures["dags"]


def with_apps(count: int, folder: Path) -> None:
    sample = yaml.safe_load((ROOT / "include" / "apps" / "sample.yaml").read_text())
    for old in folder.glob("*.yaml"):
        old.unlink()
    for n in range(count):
        (folder / f"app{n:04d}.yaml").write_text(yaml.safe_dump(sample | {"name": f"app{n:04d}"}))


def main() -> None:
    print("\nDAG file parse time (DagBag, warm interpreter)")
    for path in sorted((ROOT / "dags").glob("*.py")):
        DagBag(dag_folder=str(path))  # first parse pays for shared imports
        bag = DagBag(dag_folder=str(path))
        print(f"  {path.name:<28} {parse_ms(path, 5):7.1f} ms   dags: {', '.join(sorted(bag.dag_ids))}")

    counts = (1, 200) if QUICK else (1, 200, 1000)
    rounds = 2 if QUICK else 5
    print("\nreleases.py with generated apps, each in a fresh process (median of runs):")
    print("  every DAG = as the dag-processor parses it; a task = process start to its own DAG built")
    print("  (every DAG: as on each of the dag-processor's parses; the first after every spec changed in brackets,")
    print("  when each spec's YAML is parsed anew rather than read back from var/cache/yaml)")
    print(f"  {'apps':>5}  {'every DAG: parse':>24}  {'a task: parse':>13}  {'a task: start to DAG':>20}")
    task_wall: dict[int, float] = {}
    every_ms: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as apps, tempfile.TemporaryDirectory() as cache:
        for count in counts:
            with_apps(count, Path(apps))
            env = {"IMMUTABLE_APPS_DIR": apps, "PYTHONPATH": str(ROOT / "plugins"), "IMMUTABLE_CACHE_DIR": cache}
            _, changed_ms, built = in_a_fresh_process(env)
            assert built == count, f"{built} DAGs built from {count} apps"
            every_ms[count] = statistics.median(in_a_fresh_process(env)[1] for _ in range(rounds))
            task = [in_a_fresh_process(env | {PARSING_CONTEXT: "release_app0000"}) for _ in range(rounds)]
            task_wall[count] = statistics.median(t[0] for t in task)
            task_parse = statistics.median(t[1] for t in task)
            every = f"{every_ms[count]:.0f} ms ({changed_ms:.0f} ms)"
            print(f"  {count:>5}  {every:>24}  {task_parse:10.0f} ms  {task_wall[count]:17.0f} ms")
    print(
        f"  a task, process start to its DAG, 200 apps / 1 app: {task_wall[200] / task_wall[1]:.2f} (goal: at most 1.2)"
    )
    print(f"  every DAG, 200 apps: {every_ms[200] / 1000:.1f} s (goal: at most 2 s)")
    if 1000 in every_ms:
        print(
            f"  every DAG, 1,000 apps: {every_ms[1000] / 1000:.1f} s (goal: at most 10 s; Airflow's import "
            "timeout: 30 s)"
        )


if __name__ == "__main__":
    main()
