"""docker-compose.yaml for real: it validates, comes up healthy with real auth, runs a release of the
sample app over REST on two Celery workers through a scheduler and a worker restart, keeps its
database across `down`/`up`, and leaves nothing behind. The tests run in file order on one stack."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compose.conftest import AIRFLOW_URL, INSTANCE, PROJECT, ROOT, WORKERS, Stack, compose_env, ours, run_module

APP = "sample"
DAG_ID = f"release_{APP}"
VERSION = "1.0.0"
RELEASE_TIMEOUT_S = 900  # seconds for the whole release, restarts included
WORKER_STOP_S = 300  # seconds a restarted worker may take to finish its running tasks (warm shutdown)
EXPECTED_SERVICES = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}

# Shared between the tests of this module, which run in order on one stack.
RELEASE: dict[str, Any] = {}


def compose_cli(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    from immutable.compose import compose_program

    command = [
        *compose_program(),
        "--project-name",
        PROJECT,
        "--project-directory",
        str(ROOT),
        "--file",
        str(ROOT / "docker-compose.yaml"),
        "--env-file",
        str(env_file),
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, env=compose_env(), capture_output=True, text=True, timeout=300)


def service_containers(service: str) -> list[Any]:
    return sorted(
        (c for c in ours("containers") if c.labels.get("com.docker.compose.service") == service), key=lambda c: c.name
    )


def container_hostname(container: Any) -> str:
    """The name the entrypoint gave the container (and Airflow records as the task's hostname)."""
    code, output = container.exec_run(["cat", "/tmp/immutable-hostname"])
    assert code == 0, f"{container.name} has no /tmp/immutable-hostname: {output!r}"
    return str(output.decode().strip())


def task_instances(api: Any, run_id: str) -> list[dict[str, Any]]:
    body = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", limit=100)
    return list(body["task_instances"])


def wait_for_task(api: Any, run_id: str, task_id: str, states: set[str], timeout_s: float = 600) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for ti in task_instances(api, run_id):
            if ti["task_id"] == task_id and ti["state"] in states:
                return str(ti["state"])
        run_state = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        assert run_state not in ("failed", "success"), f"the run ended ({run_state}) before {task_id} was {states}"
        time.sleep(2)
    raise AssertionError(f"{task_id} not in {states} within {timeout_s:.0f}s")


def test_compose_file_validates(tmp_path: Path) -> None:
    """`docker-compose config` accepts the file with an env file like the one setup writes, and refuses
    it without one (credentials never default)."""
    from immutable.compose import Images, Settings, env_values

    settings = Settings(
        project=PROJECT,
        airflow_port=8093,
        postgres_port=5840,
        redis_port=5841,
        scheduler_health_port=8894,
        workers=WORKERS,
        state_dir=tmp_path,
        platform_file=ROOT / "tests" / "compose" / "platform.yaml",
    )
    images = Images("r/base@sha256:" + "0" * 64, "immutable/airflow:x", "immutable/compose-postgres:x", "r:x")
    env_file = settings.env_file
    env_file.parent.mkdir(parents=True)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_values(settings, images, {}).items()))

    done = compose_cli("config", env_file=env_file)
    assert done.returncode == 0, done.stderr
    import yaml

    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == EXPECTED_SERVICES
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert name == "airflow-init" or "healthcheck" in service, f"{name} has no health check"
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker, "a fixed name or port would stop --scale"
    assert worker["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "postgres-db-volume" in config["volumes"]
    assert {"/var/run/docker.sock"} <= {v.split(":")[1] for v in _volumes(worker)}

    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = compose_cli("config", env_file=empty)
    assert refused.returncode != 0 and "generate the env file first" in refused.stderr, refused.stderr


def _volumes(service: dict[str, Any]) -> list[str]:
    """Volume entries as `source:target`, whichever syntax compose printed."""
    found = []
    for volume in service.get("volumes", []):
        found.append(volume if isinstance(volume, str) else f"{volume.get('source')}:{volume['target']}")
    return found


def test_stack_is_healthy_with_real_auth(stack: Stack) -> None:
    containers = ours("containers")
    by_service: dict[str, list[Any]] = {}
    for container in containers:
        by_service.setdefault(container.labels["com.docker.compose.service"], []).append(container)
    assert set(by_service) == EXPECTED_SERVICES
    assert len(by_service["airflow-worker"]) == WORKERS
    for service, members in by_service.items():
        for container in members:
            state = container.attrs["State"]
            if service == "airflow-init":
                assert state["Status"] == "exited" and state["ExitCode"] == 0, container.name
            else:
                assert state["Health"]["Status"] == "healthy", f"{container.name}: {state['Health']['Status']}"
    # Every Airflow service runs the image built FROM the base by digest.
    images = {c.image.id for service, members in by_service.items() if service.startswith("airflow") for c in members}
    assert len(images) == 1
    labels = by_service["airflow-scheduler"][0].image.labels
    assert labels["org.opencontainers.image.base.digest"] == stack.base, labels

    health = httpx.get(f"{AIRFLOW_URL}/api/v2/monitor/health", timeout=10).json()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health

    assert httpx.get(f"{AIRFLOW_URL}/api/v2/dags", timeout=10).status_code == 401
    wrong = httpx.post(f"{AIRFLOW_URL}/auth/token", json={"username": "admin", "password": "admin"}, timeout=10)
    assert wrong.status_code in (401, 403), wrong.text
    assert stack.api().get("/dags", limit=1) is not None


def test_release_spreads_over_workers_and_survives_restarts(stack: Stack) -> None:
    from immutable.demo import failure_cause
    from immutable.images.engine import docker_client

    api = stack.api()
    api.wait_for_dag(DAG_ID, timeout_s=300)
    api.unpause(DAG_ID)
    run_id = api.trigger_ok(DAG_ID, {"version": VERSION, "note": "compose test"})
    RELEASE["run_id"] = run_id

    # The scheduler restarts once the run is under way...
    wait_for_task(api, run_id, "validate", {"success"})
    restarted = compose_cli("restart", "--timeout", "60", "airflow-scheduler", env_file=stack_env_file())
    assert restarted.returncode == 0, restarted.stderr
    # ...and a worker while it runs one of the release's tasks: it finishes what it runs (warm
    # shutdown), the other worker goes on.
    wait_for_task(api, run_id, "bake", {"running", "success"})
    busy_host = wait_for_a_busy_worker(api, run_id)
    worker = next(c for c in service_containers("airflow-worker") if container_hostname(c) == busy_host)
    docker_client(timeout_s=WORKER_STOP_S + 60).containers.get(worker.id).restart(timeout=WORKER_STOP_S)

    state = api.wait_for_run(DAG_ID, run_id, timeout_s=RELEASE_TIMEOUT_S)
    tis = task_instances(api, run_id)
    summary = {f"{ti['task_id']}[{ti['map_index']}]": (ti["state"], ti.get("hostname")) for ti in tis}
    assert state == "success", (summary, failure_cause(api, DAG_ID, run_id, api.task_states(DAG_ID, run_id)))

    workers = {container_hostname(c) for c in service_containers("airflow-worker")}
    ran_on = {ti["hostname"] for ti in tis if ti["state"] == "success" and ti.get("hostname")}
    assert ran_on <= workers, f"tasks ran on {ran_on}, the workers are {workers}"
    assert len(ran_on) >= 2, f"every task ran on {ran_on}: {summary}"
    # Nothing was lost to the restarts: no earlier try of any task failed (the DAG allows one
    # retry, which would hide a task killed mid-way). A try the restarted scheduler reset before
    # it ran is not a loss.
    failed_tries = {
        f"{ti['task_id']}[{ti['map_index']}]": [t["state"] for t in earlier_tries(api, run_id, ti)]
        for ti in tis
        if (ti.get("try_number") or 0) > 1
    }
    lost = {task: states for task, states in failed_tries.items() if {"failed", "up_for_retry"} & set(states)}
    assert lost == {}, f"tries that failed around the restarts: {lost} (all tries beyond the first: {failed_tries})"
    RELEASE["tasks"] = len(tis)


def earlier_tries(api: Any, run_id: str, ti: dict[str, Any]) -> list[dict[str, Any]]:
    """The task instance's tries before its current one, from Airflow's task instance history."""
    mapped = f"/{ti['map_index']}" if ti["map_index"] >= 0 else ""
    tries = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}{mapped}/tries")
    return [t for t in tries["task_instances"] if t["try_number"] < ti["try_number"]]


def wait_for_a_busy_worker(api: Any, run_id: str, timeout_s: float = 600) -> str:
    """The hostname of a worker running one of the run's tasks now."""
    workers = {container_hostname(c) for c in service_containers("airflow-worker")}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = [ti for ti in task_instances(api, run_id) if ti["state"] == "running" and ti.get("hostname")]
        busy = {str(ti["hostname"]) for ti in running} & workers
        if busy:
            return sorted(busy)[0]
        assert api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"] == "running", "the run ended before a restart"
        time.sleep(0.5)
    raise AssertionError(f"no task of {run_id} was running on a worker for {timeout_s:.0f}s")


def stack_env_file() -> Path:
    return ROOT / "var" / "compose-test" / "compose" / "airflow.env"


def test_database_survives_down_and_up(stack: Stack) -> None:
    runs_before = {r["dag_run_id"]: r["state"] for r in stack.api().get(f"/dags/{DAG_ID}/dagRuns")["dag_runs"]}
    assert runs_before, "no release run to keep: the release test did not trigger one"

    run_module("immutable.compose", "down")
    assert ours("containers") == [] and ours("networks") == []
    assert [v.name for v in ours("volumes") if v.name.endswith("postgres-db-volume")], "the database volume went"

    run_module("immutable.compose", "up", "--no-build")
    runs_after = {r["dag_run_id"]: r["state"] for r in stack.api().get(f"/dags/{DAG_ID}/dagRuns")["dag_runs"]}
    assert runs_after == runs_before
    if "run_id" in RELEASE:
        assert len(task_instances(stack.api(), RELEASE["run_id"])) == RELEASE.get("tasks")


@pytest.mark.usefixtures("stack")
def test_teardown_leaves_nothing() -> None:
    from immutable.images.engine import docker_client
    from immutable.local.fleets import LABEL_INSTANCE

    run_module("immutable.compose", "down", "--volumes")
    assert ours("containers") == []
    assert ours("networks") == []
    assert ours("volumes") == []
    # The releases' fleets belong to the platform; its `down` removes them.
    run_module("immutable.localctl", "down")
    fleets = docker_client().containers.list(
        ignore_removed=True, all=True, filters={"label": f"{LABEL_INSTANCE}={INSTANCE}"}
    )
    assert fleets == [], [c.name for c in fleets]
