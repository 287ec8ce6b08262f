"""Running DAGs with dag.test() and reading what they left in the metadata DB."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import threading
import time
from collections.abc import Callable, Generator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# The sample app on the test platform (tests/platform.yaml), as the production tests read it.
APP = "sample"
REGIONS = ["eu-west", "us-east", "ap-south"]


def production() -> Any:
    from immutable.config import load_platform
    from immutable.local.production import LocalProduction
    from tests.conftest import TEST_STATE

    return LocalProduction(load_platform(), TEST_STATE)


def expire_rollback_window(state: Any, app: str, region: str) -> None:
    """Time passes for one region: its kept color's rollback window ends now (the record's deadline,
    which `retire_expired` reads, is all a clock would change). `state`: either platform's production."""
    with state._locked(app, region) as record:
        assert record.get("previous"), f"{region} keeps no color: {record}"
        record["previous"]["retire_after"] = time.time() - 1


def live_versions() -> dict[str, str | None]:
    prod = production()
    return {region: (prod.live(APP, region) or {}).get("version") for region in REGIONS}


def fleet_colors(region: str) -> dict[str, str]:
    return {m.color: m.version for m in production().fleets.members(APP, region)}


def failed_requests(start: float, end: float, runs: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Requests that failed in [start, end], each with what explains it when an assertion shows it:
    the region's HAProxy log lines of those seconds (it logs errors only) and the tasks of `runs`
    that were running then."""
    from immutable.local.traffic import failures_between
    from tests.conftest import TEST_STATE

    failures = failures_between(TEST_STATE, start, end)
    for failure in failures:
        failure["haproxy_log"] = haproxy_log_near(TEST_STATE, failure["region"], failure["time"])
        failure["running_tasks"] = [task for run in runs for task in tasks_running_at(run, failure["time"])]
    return failures


HAPROXY_LOG_TIME = re.compile(r"\[(\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}\.\d{3})\]")


def haproxy_log_near(state_dir: Path, region: str, at: float, within_s: float = 2.0) -> list[str]:
    """The region's HAProxy log lines stamped within `within_s` of `at` (HAProxy stamps in local time)."""
    path = state_dir / "run" / f"haproxy-{region}.log"
    near = []
    with contextlib.suppress(FileNotFoundError), open(path, errors="replace") as lines:
        for line in lines:
            stamp = HAPROXY_LOG_TIME.search(line)
            if stamp and abs(datetime.strptime(stamp.group(1), "%d/%b/%Y:%H:%M:%S.%f").timestamp() - at) <= within_s:
                near.append(line.rstrip())
    return near


def tasks_running_at(run: Any, at: float) -> list[str]:
    """The run's tasks (with their map index) that had started and not ended at epoch `at`."""
    running = []
    for ti in run.get_task_instances():
        started = ti.start_date.timestamp() if ti.start_date else None
        ended = ti.end_date.timestamp() if ti.end_date else float("inf")
        if started is not None and started <= at <= ended:
            running.append(ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""))
    return running


def load_dag(file_name: str, dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / file_name))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]


class TaskStates(dict[str, str]):
    """{task_id or task_id[map_index]: state}, shown in an assertion message with the tasks that did
    not succeed first: pytest cuts a long message, and those are the ones a failure is about."""

    def __repr__(self) -> str:
        unsuccessful = {task: state for task, state in self.items() if state != "success"}
        return f"not successful: {unsuccessful!r}; {len(self) - len(unsuccessful)} successful"


def run_dag(file_name: str, dag_id: str, conf: dict[str, Any]) -> tuple[Any, TaskStates]:
    """Run to the end; returns the run and {task_id or task_id[map_index]: state}."""
    run = load_dag(file_name, dag_id).test(run_conf=conf)
    states = TaskStates(
        {
            ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state)
            for ti in run.get_task_instances()
        }
    )
    return run, states


def xcom(run: Any, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == key,
            )
        ).first()
        assert row is not None, f"no XCom from {task_id}[{map_index}]"
        return XComModel.deserialize_value(row)


@contextlib.contextmanager
def platform_variant(name: str, change: Callable[[dict[str, Any]], None]) -> Generator[Path, None, None]:
    """The test platform file changed by `change` (same ports, regions and state): DAGs parsed and run
    inside this block use it."""
    import yaml

    from immutable.config import platform_file

    original = platform_file()
    data = yaml.safe_load(original.read_text())
    change(data)
    # Named after the file it changes too: the aws tests' platform and the local one never share a variant.
    tag = hashlib.sha256(str(original).encode()).hexdigest()[:8]
    variant = Path(os.environ.get("IMMUTABLE_STATE_DIR", ROOT / "var" / "test")) / f"platform-{name}-{tag}.yaml"
    variant.parent.mkdir(parents=True, exist_ok=True)
    variant.write_text(yaml.safe_dump(data, sort_keys=False))
    os.environ["IMMUTABLE_PLATFORM_FILE"] = str(variant)
    try:
        yield variant
    finally:
        os.environ["IMMUTABLE_PLATFORM_FILE"] = str(original)


def synchronized_rollout() -> contextlib.AbstractContextManager[Path]:
    """`rollout.synchronized: true`: DAGs parsed and run inside this block flip every region together."""
    return platform_variant("synchronized", lambda data: data.setdefault("rollout", {}).update(synchronized=True))


def faults_archive(faults: dict[str, Any]) -> bytes:
    """/tmp/sample-faults.json as a tar stream: the sample app reads it on its first request and every
    second after (a fault injected into a server, see include/apps/sample/src/sample_app/server.py)."""
    body = json.dumps(faults).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("sample-faults.json")
        info.size, info.mode = len(body), 0o644
        archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def faults_in_new_fleets(
    version: str, region: str, faults: dict[str, Any]
) -> contextlib.AbstractContextManager[list[str]]:
    """While the block runs, every blue/green member of `version` created in `region` gets `faults`
    the moment the engine creates it, before it answers anything: `{"fail_health": true}` makes a
    color that never turns healthy, `{"error_rate": 1.0}` one that passes its health checks and then
    fails its users. Yields the names of the members it broke, filled in as they come."""
    labels = ["io.immutable.platform=test", "io.immutable.role=fleet", f"io.immutable.region={region}"]
    return faults_in_new_containers([*labels, f"io.immutable.version={version}"], ("blue", "green"), faults)


@contextlib.contextmanager
def faults_in_new_containers(
    labels: list[str], colors: tuple[str, ...], faults: dict[str, Any]
) -> Generator[list[str], None, None]:
    """While the block runs, every container with all `labels` and one of `colors` gets `faults`
    the moment the engine creates it. Yields the names of those it broke, filled in as they come."""
    import docker

    client = docker.from_env()
    events = client.events(decode=True, filters={"type": "container", "event": "create", "label": labels})
    broken: list[str] = []

    def inject() -> None:
        for event in events:
            attributes = event.get("Actor", {}).get("Attributes", {})
            if attributes.get("io.immutable.color") not in colors:
                continue
            try:
                client.containers.get(event["id"]).put_archive("/tmp", faults_archive(faults))
            except docker.errors.NotFound:  # removed again at once: nothing to break
                continue
            broken.append(attributes.get("name", event["id"]))

    watcher = threading.Thread(target=inject, name="faults", daemon=True)
    watcher.start()
    try:
        yield broken
    finally:
        events.close()
        watcher.join(timeout=10)
