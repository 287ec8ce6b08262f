"""The running stack: docker-compose up, health waits, down and the sweep of what compose left."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

from immutable.compose_stack.env_file import images_from_env, read_env_file, write_env_file
from immutable.compose_stack.images import build_images
from immutable.compose_stack.settings import ComposeError, Settings, say
from immutable.paths import PROJECT_ROOT

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
# Added after COMPOSE_FILE when IMMUTABLE_COMPOSE_OFFICIAL_IMAGES=1 (a registry answers).
OFFICIAL_IMAGES_FILE = PROJECT_ROOT / "include" / "compose" / "official-images.yaml"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
WORKER_SERVICE = "airflow-worker"
INIT_SERVICE = "airflow-init"
HEALTHY_TIMEOUT_S = 900  # seconds for every service to report healthy after `up` (minutes on a busy machine)
POLL_S = 3.0  # seconds between health polls
# docker-compose.yaml's stop_grace_period of the workers: a stopped worker finishes the tasks it
# runs (Celery's warm shutdown), so `down` waits as long before it kills anything.
WORKER_STOP_GRACE_S = 300


COMPOSE_PROGRAMS = ("docker-compose", "docker compose")  # v1 (Debian 12's 1.29), the v2 plugin


def compose_program() -> list[str]:
    """IMMUTABLE_COMPOSE_PROGRAM when set; else Debian 12's docker-compose 1.29 where installed,
    else the compose v2 plugin."""
    chosen = os.environ.get("IMMUTABLE_COMPOSE_PROGRAM", "").strip()
    if chosen:
        if chosen not in COMPOSE_PROGRAMS:
            raise ComposeError(f"IMMUTABLE_COMPOSE_PROGRAM is {chosen!r}; allowed: {', '.join(COMPOSE_PROGRAMS)}")
        program = chosen.split()
        try:
            works = subprocess.run([*program, "version"], capture_output=True).returncode == 0
        except OSError:
            works = False
        if not works:
            raise ComposeError(f"IMMUTABLE_COMPOSE_PROGRAM={chosen!r}, but `{chosen} version` fails: is it installed?")
        return program
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    raise ComposeError(
        "neither docker-compose nor the docker compose plugin is installed; Debian: `apt-get install docker-compose`"
    )


def compose_command(settings: Settings, *args: str) -> list[str]:
    return [
        *compose_program(),
        "--project-name",
        settings.project,
        "--project-directory",
        str(PROJECT_ROOT),
        "--file",
        str(COMPOSE_FILE),
        *(["--file", str(OFFICIAL_IMAGES_FILE)] if settings.official_images else []),
        "--env-file",
        str(settings.env_file),
        *args,
    ]


def compose(settings: Settings, *args: str, capture: bool = False, timeout_s: float = 900) -> str:
    command = compose_command(settings, *args)
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=capture, text=True, timeout=timeout_s)
    if done.returncode != 0:
        output = ((done.stdout or "") + (done.stderr or ""))[-3000:]
        raise ComposeError(
            f"docker-compose {' '.join(args)} failed (exit {done.returncode}) for project {settings.project}\n{output}"
        )
    return done.stdout or ""


def project_containers(project: str) -> list[Any]:
    from immutable.images.engine import docker_client

    return list(
        docker_client().containers.list(all=True, ignore_removed=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    )


def project_networks(project: str) -> list[Any]:
    from immutable.images.engine import docker_client

    return list(docker_client().networks.list(filters={"label": f"{PROJECT_LABEL}={project}"}))


def restart_counts(project: str) -> dict[str, int]:
    """How often each container of the project was restarted by its policy, by container id."""
    return {c.id: int(c.attrs.get("RestartCount") or 0) for c in project_containers(project)}


def container_logs(containers: list[Any], names: list[str], lines: int = 30) -> str:
    """The last `lines` log lines of the containers named in `names` (or of all, if none is), each
    with its health check's last answer when it has one (what made it unhealthy)."""
    chosen = [c for c in containers if any(c.name in n for n in names)] or containers
    return "\n".join(f"--- {c.name}\n{c.logs(tail=lines).decode(errors='replace')}{last_probe(c)}" for c in chosen)


def last_probe(container: Any) -> str:
    """The container's last health check: exit code and output, or '' when it has none."""
    probes = ((container.attrs.get("State") or {}).get("Health") or {}).get("Log") or []
    if not probes:
        return ""
    probe = probes[-1]
    said = str(probe.get("Output", "")).strip()[-500:]
    return f"--- {container.name}: last health check exited {probe.get('ExitCode')}: {said}\n"


def unhealthy(containers: list[Any], restarts_before: dict[str, int] | None = None) -> tuple[list[str], list[str]]:
    """(containers still starting, containers that failed) of the project. A container restarted
    by its policy more often than `restarts_before` says (before this `up`) has crashed. A running
    container whose health check says unhealthy is still waited for: on a busy machine an Airflow
    service can take minutes to answer, and it turns healthy by itself once it does."""
    restarts_before = restarts_before or {}
    waiting, failed = [], []
    for container in containers:
        container.reload()
        service = container.labels.get(SERVICE_LABEL, "")
        state = container.attrs["State"]
        if service == INIT_SERVICE:
            if state["Status"] == "exited" and state.get("ExitCode") != 0:
                failed.append(f"{container.name} exited {state.get('ExitCode')}")
            elif state["Status"] != "exited":
                waiting.append(f"{container.name} running")
            continue
        health = (state.get("Health") or {}).get("Status")
        # A service that crashed and was restarted by its policy fails the wait at once, with its log.
        restarts = int(container.attrs.get("RestartCount") or 0)
        crashed = state["Status"] == "restarting" or restarts > restarts_before.get(container.id, 0)
        if state["Status"] in ("exited", "dead") or crashed:
            failed.append(f"{container.name} {state['Status']} {health or ''}".strip())
        elif state["Status"] != "running" or health not in (None, "healthy"):
            waiting.append(f"{container.name} {health or state['Status']}")
    return waiting, failed


def wait_healthy(
    settings: Settings,
    workers: int,
    timeout_s: float = HEALTHY_TIMEOUT_S,
    restarts_before: dict[str, int] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    expected = {
        "postgres",
        "redis",
        INIT_SERVICE,
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    last = ""
    while True:
        containers = project_containers(settings.project)
        services = [c.labels.get(SERVICE_LABEL, "") for c in containers]
        missing = sorted(expected - set(services))
        if services.count(WORKER_SERVICE) < workers:
            missing.append(f"{WORKER_SERVICE} x{workers - services.count(WORKER_SERVICE)}")
        waiting, failed = unhealthy(containers, restarts_before)
        if failed:
            # The logs first, the verdict last: a caller that keeps only the output's end still names it.
            logs = container_logs(containers, failed)
            raise ComposeError(f"{logs}\ncompose project {settings.project}: {', '.join(failed)}")
        if not waiting and not missing:
            return
        status = f"waiting for {', '.join(sorted(waiting) + missing)}"
        if status != last:
            say(status)
            last = status
        if time.monotonic() > deadline:
            logs = container_logs(containers, waiting) if waiting else ""
            raise ComposeError(
                f"{logs}\ncompose project {settings.project} not healthy after {timeout_s:.0f}s: {status}"
            )
        time.sleep(POLL_S)


def up(settings: Settings, *, build: bool = True, workers: int | None = None) -> None:
    """Build (unless told not to), write the env file, start the stack, wait until it is healthy."""
    if build or not settings.env_file.exists():
        images = build_images(official_images=settings.official_images)
    else:
        images = images_from_env(settings)
    write_env_file(settings, images)
    count = settings.workers if workers is None else workers
    restarts_before = restart_counts(settings.project)  # a stack that runs already may have restarted long ago
    try:
        compose(settings, "up", "--detach", "--no-build", "--remove-orphans", "--scale", f"{WORKER_SERVICE}={count}")
    except ComposeError as exc:
        # Compose says only which service failed (init exited 1, Postgres unhealthy): show why.
        containers = project_containers(settings.project)
        failed = [c.name for c in containers if c.status != "running" or c.attrs["State"].get("ExitCode")]
        raise ComposeError(f"{exc}\n{container_logs(containers, failed)}") from exc
    wait_healthy(settings, count, restarts_before=restarts_before)
    values = read_env_file(settings.env_file)
    say(f"Airflow UI: {settings.url}  user: {values['ADMIN_USER']}  password: {values['ADMIN_PASSWORD']}")
    say(f"env file (credentials): {settings.env_file}  logs: {settings.logs_dir}")
    say(f"database: docker volume {settings.project}_postgres-db-volume (kept by down, removed by down --volumes)")


def down(settings: Settings, *, volumes: bool = False) -> list[str]:
    """Remove every container and network of the project (and its volumes if asked); returns what
    had to be removed after `docker-compose down` (nothing, when compose did its job)."""
    try:
        if settings.env_file.exists():
            options = ["--remove-orphans", *(["--volumes"] if volumes else []), "--timeout", str(WORKER_STOP_GRACE_S)]
            compose(settings, "down", *options)
    finally:
        swept = sweep(settings, volumes=volumes)
    return swept


def sweep(settings: Settings, *, volumes: bool) -> list[str]:
    """Remove what is left of the project after `docker-compose down` (all of it, if down failed)."""
    swept = []
    for container in project_containers(settings.project):
        container.remove(force=True)
        swept.append(f"container {container.name}")
    for network in project_networks(settings.project):
        network.remove()
        swept.append(f"network {network.name}")
    if volumes:
        from immutable.images.engine import docker_client

        for volume in docker_client().volumes.list(filters={"label": f"{PROJECT_LABEL}={settings.project}"}):
            volume.remove(force=True)
            swept.append(f"volume {volume.name}")
    return swept
