"""`python -m immutable.compose build|env|up|down|status`: the distributed Airflow of docker-compose.yaml.

Used by the Makefile (`make compose-up`, `compose-down`, `compose-status`). `up` builds the
Airflow, Postgres and Redis images FROM the current base image by digest, writes the env file
(random credentials, generated once and kept, since the database volume remembers its
password), starts the stack with `--scale airflow-worker=N` and waits until every service is
healthy. `down` removes every container and network of the compose project; the database volume
stays unless `--volumes`.

Settings come from the environment, so tests can run a second stack beside the first:
IMMUTABLE_COMPOSE_PROJECT, IMMUTABLE_COMPOSE_AIRFLOW_PORT, IMMUTABLE_COMPOSE_POSTGRES_PORT,
IMMUTABLE_COMPOSE_REDIS_PORT, IMMUTABLE_COMPOSE_SCHEDULER_HEALTH_PORT, IMMUTABLE_COMPOSE_WORKERS;
IMMUTABLE_COMPOSE_PROGRAM picks the compose program (`docker-compose` for v1, `docker compose`
for the v2 plugin; default: whichever is installed, v1 first); the platform file and state dir
as everywhere (IMMUTABLE_PLATFORM_FILE, IMMUTABLE_STATE_DIR).

This module is also imported inside the containers, for `worker_hostname` (Airflow's
`[core] hostname_callable`): keep its top-level imports to the standard library.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutable.paths import PLATFORM_FILE, PROJECT_ROOT, state_dir

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
# Added after COMPOSE_FILE when IMMUTABLE_COMPOSE_OFFICIAL_IMAGES=1 (a registry answers).
OFFICIAL_IMAGES_FILE = PROJECT_ROOT / "include" / "compose" / "official-images.yaml"
AIRFLOW_CONTEXT = PROJECT_ROOT / "include" / "airflow"
SERVICE_CONTEXTS = {
    "postgres": PROJECT_ROOT / "include" / "compose" / "postgres",
    "redis": PROJECT_ROOT / "include" / "compose" / "redis",
}
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DOCKER_SOCKET = "/var/run/docker.sock"
CONTAINER_CA_BUNDLE = "/etc/immutable/build-ca.crt"  # where the Airflow services see the host's CA bundle
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
WORKER_SERVICE = "airflow-worker"
INIT_SERVICE = "airflow-init"
ADMIN_USER = "admin"
BUILD_TIMEOUT_S = 1800  # seconds: the Airflow image's pip install runs through a proxy here
HEALTHY_TIMEOUT_S = 600  # seconds for every service to report healthy after `up`
POLL_S = 3.0  # seconds between health polls
# docker-compose.yaml's stop_grace_period of the workers: a stopped worker finishes the tasks it
# runs (Celery's warm shutdown), so `down` waits as long before it kills anything.
WORKER_STOP_GRACE_S = 300
# Generated once, then kept: the database volume and running services remember them.
SECRET_KEYS = (
    "ADMIN_PASSWORD",
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
)


class ComposeError(RuntimeError):
    pass


def worker_hostname() -> str:
    """Airflow's hostname_callable in the stack: the containers share the host's network, so the
    host's name alone cannot tell two workers apart; the entrypoint sets `<host>-<container id>`."""
    return os.environ.get("IMMUTABLE_HOSTNAME") or socket.getfqdn()


def say(message: str) -> None:
    print(f"[immutable compose] {message}", flush=True)


@dataclass(frozen=True)
class Settings:
    project: str
    airflow_port: int
    postgres_port: int
    redis_port: int
    scheduler_health_port: int
    workers: int
    state_dir: Path
    platform_file: Path
    official_images: bool = False  # postgres:15 and redis:7 pulled, instead of built from our base

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            project=env.get("IMMUTABLE_COMPOSE_PROJECT", "immutable"),
            airflow_port=int(env.get("IMMUTABLE_COMPOSE_AIRFLOW_PORT", "8090")),
            postgres_port=int(env.get("IMMUTABLE_COMPOSE_POSTGRES_PORT", "5490")),
            redis_port=int(env.get("IMMUTABLE_COMPOSE_REDIS_PORT", "6390")),
            scheduler_health_port=int(env.get("IMMUTABLE_COMPOSE_SCHEDULER_HEALTH_PORT", "8974")),
            workers=int(env.get("IMMUTABLE_COMPOSE_WORKERS", "2")),
            state_dir=state_dir().resolve(),
            platform_file=PLATFORM_FILE.resolve(),
            official_images=env.get("IMMUTABLE_COMPOSE_OFFICIAL_IMAGES", "") in ("1", "true", "yes"),
        )

    @property
    def compose_dir(self) -> Path:
        return self.state_dir / "compose"

    @property
    def env_file(self) -> Path:
        return self.compose_dir / "airflow.env"

    @property
    def ca_bundle(self) -> Path:
        return self.compose_dir / "build-ca.crt"

    @property
    def logs_dir(self) -> Path:
        return self.compose_dir / "logs"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"


# --- images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Images:
    base: str  # <build registry>/immutable/base@sha256:...
    airflow: str
    postgres: str
    redis: str


def current_base(tag: str = "candidate") -> str:
    """The base image the pipeline published on `tag`, by digest, pulled into the engine."""
    from immutable.config import load_base_spec, load_platform
    from immutable.images.base import pull_candidate
    from immutable.registry import RegistryClient

    spec, platform = load_base_spec(), load_platform()
    digest = RegistryClient(platform.build_registry).manifest_digest(spec.repository, tag)
    if digest is None:
        raise ComposeError(
            f"there is no {spec.repository}:{tag} in the build registry {platform.build_registry}; the Airflow "
            "image is built on the base image the pipeline produces. Build one first: `make demo` (its first "
            "step), or trigger the base_image DAG, then run this again."
        )
    return pull_candidate(spec, platform, digest)


def host_pip_indexes() -> dict[str, str]:
    """The host's pip index settings (environment first, then pip's config), http(s) only: a
    file:// index of the host does not exist inside a build container."""
    found: dict[str, str] = {}
    for key, env in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        value = os.environ.get(env)
        if value is None:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", f"global.{key}"], capture_output=True, text=True
            )
            value = done.stdout.strip() if done.returncode == 0 else ""
        urls = [url for url in value.split() if url.startswith(("http://", "https://"))]
        if urls:
            found[env] = " ".join(urls)
    return found


def host_ca_bundle() -> bytes:
    """The host's CA bundle, so the build trusts what the host trusts (a TLS-inspecting proxy);
    IMMUTABLE_BUILD_CA_BUNDLE names another file, empty disables it."""
    configured = os.environ.get("IMMUTABLE_BUILD_CA_BUNDLE", HOST_CA_BUNDLE)
    return Path(configured).read_bytes() if configured and Path(configured).is_file() else b""


# Test and lint tools of requirements.txt that no DAG or plugin imports: left out of the image.
DEV_ONLY = frozenset({"moto", "pytest", "selenium", "ruff", "mypy"})


def _pin_name(line: str) -> str:
    return line.split("#", 1)[0].split("==", 1)[0].split("[", 1)[0].strip().lower().replace("_", "-")


def image_requirements(requirements: str) -> str:
    """requirements.txt without the DEV_ONLY tools."""
    return "".join(f"{line}\n" for line in requirements.splitlines() if _pin_name(line) not in DEV_ONLY)


def image_constraints(constraints: str, overrides: str) -> str:
    """constraints.txt with the pins of include/airflow/constraints-overrides.txt swapped in."""
    pins = {_pin_name(line): line.split("#", 1)[0].strip() for line in overrides.splitlines() if "==" in line}
    out = []
    for line in constraints.splitlines():
        name = _pin_name(line)
        out.append(pins.pop(name) if "==" in line and name in pins else line)
    if pins:
        raise ComposeError(f"constraints-overrides.txt pins {sorted(pins)}, which constraints.txt does not: drop them")
    return "\n".join(out) + "\n"


def airflow_context() -> bytes:
    files: dict[str, bytes] = {
        path.name: path.read_bytes() for path in sorted(AIRFLOW_CONTEXT.iterdir()) if path.is_file()
    }
    files["requirements.txt"] = image_requirements((PROJECT_ROOT / "requirements.txt").read_text()).encode()
    constraints = (PROJECT_ROOT / "constraints.txt").read_text()
    overrides = (AIRFLOW_CONTEXT / "constraints-overrides.txt").read_text()
    files["constraints.txt"] = image_constraints(constraints, overrides).encode()
    files["build-ca.crt"] = host_ca_bundle()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _build(
    name: str,
    tag: str,
    base: str,
    *,
    context: bytes | None = None,
    path: Path | None = None,
    args: dict[str, str] | None = None,
) -> None:
    from immutable.images.engine import docker_client

    client = docker_client(timeout_s=BUILD_TIMEOUT_S)
    labels = {
        "org.opencontainers.image.base.name": base.split("@", 1)[0],
        "org.opencontainers.image.base.digest": base.split("@", 1)[1],
    }
    options: dict[str, Any] = {
        "tag": tag,
        "buildargs": {"BASE_IMAGE": base, **(args or {})},
        "labels": labels,
        "rm": True,
        "forcerm": True,
        "decode": True,
    }
    if context is not None:
        options |= {"fileobj": io.BytesIO(context), "custom_context": True}
    else:
        options["path"] = str(path)
    started, recent = time.monotonic(), list[str]()
    for chunk in client.api.build(**options):
        line = str(chunk.get("stream", "")).rstrip()
        if line:
            recent = [*recent, line][-40:]
            if line.startswith("Step "):
                say(f"{name}: {line[:160]}")
        if "error" in chunk:
            shown = "\n".join(recent)
            raise ComposeError(f"building the {name} image on {base} failed: {chunk['error'].strip()}\n{shown}")
    say(f"{name}: built {tag} in {time.monotonic() - started:.0f}s")


def build_images(base: str | None = None, *, official_images: bool = False) -> Images:
    """The stack's three images, FROM `base` (default: the current candidate) by digest. The
    engine's cache makes a rebuild on the same base and requirements take seconds. With
    `official_images`, Postgres and Redis are the official images (pulled by compose) instead."""
    base = base or current_base()
    if "@sha256:" not in base:
        raise ComposeError(f"the base image must be pinned by digest (repo@sha256:...), not {base}")
    short = base.split("@sha256:", 1)[1][:12]
    images = Images(
        base=base,
        airflow=f"immutable/airflow:base-{short}",
        postgres=f"immutable/compose-postgres:base-{short}",
        redis=f"immutable/compose-redis:base-{short}",
    )
    say(f"base image: {base}")
    if not official_images:
        _build("postgres", images.postgres, base, path=SERVICE_CONTEXTS["postgres"])
        _build("redis", images.redis, base, path=SERVICE_CONTEXTS["redis"])
    _build("airflow", images.airflow, base, context=airflow_context(), args=host_pip_indexes())
    return images


# --- env file ------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def docker_gid(socket_path: str = DOCKER_SOCKET) -> int:
    try:
        return Path(socket_path).stat().st_gid
    except OSError:
        return 0


def env_values(settings: Settings, images: Images, kept: dict[str, str]) -> dict[str, str]:
    """Every value the compose file and the services read; secrets are `kept` when present."""
    secret = {key: kept.get(key, "") for key in SECRET_KEYS}
    for key in (
        "ADMIN_PASSWORD",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
    ):
        secret[key] = secret[key] or secrets.token_hex(16)
    secret["AIRFLOW__CORE__FERNET_KEY"] = (
        secret["AIRFLOW__CORE__FERNET_KEY"] or base64.urlsafe_b64encode(os.urandom(32)).decode()
    )
    db = f"airflow:{secret['POSTGRES_PASSWORD']}@127.0.0.1:{settings.postgres_port}/airflow"
    return {
        "COMPOSE_PROJECT_NAME": settings.project,
        "COMPOSE_ENV_FILE": str(settings.env_file),
        "COMPOSE_LOGS_DIR": str(settings.logs_dir),
        "AIRFLOW_IMAGE": images.airflow,
        "POSTGRES_IMAGE": images.postgres,
        "REDIS_IMAGE": images.redis,
        "BASE_IMAGE": images.base,
        "AIRFLOW_UID": str(os.getuid()),
        "DOCKER_GID": str(docker_gid()),
        "DOCKER_SOCKET": DOCKER_SOCKET,
        "BUILD_CA_BUNDLE": str(settings.ca_bundle),
        "CONTAINER_CA_BUNDLE": CONTAINER_CA_BUNDLE if host_ca_bundle() else "",
        "AIRFLOW_HOST": "127.0.0.1",
        "AIRFLOW_PORT": str(settings.airflow_port),
        "POSTGRES_PORT": str(settings.postgres_port),
        "REDIS_PORT": str(settings.redis_port),
        "SCHEDULER_HEALTH_PORT": str(settings.scheduler_health_port),
        "IMMUTABLE_PROJECT_ROOT": str(PROJECT_ROOT.resolve()),
        "IMMUTABLE_PLATFORM_FILE": str(settings.platform_file),
        "IMMUTABLE_STATE_DIR": str(settings.state_dir),
        "ADMIN_USER": ADMIN_USER,
        **secret,
        "REDISCLI_AUTH": secret["REDIS_PASSWORD"],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{db}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{secret['REDIS_PASSWORD']}@127.0.0.1:{settings.redis_port}/0",
    }


def write_env_file(settings: Settings, images: Images) -> Path:
    values = env_values(settings, images, read_env_file(settings.env_file))
    settings.compose_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    # The tasks' builds (the app's wheel) trust what the host trusts; see host_ca_bundle.
    settings.ca_bundle.write_bytes(host_ca_bundle())
    text = "# Generated by `python -m immutable.compose`: credentials of the compose stack. Never commit it.\n"
    text += "".join(f"{key}={value}\n" for key, value in values.items())
    tmp = settings.env_file.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600, so the credentials are never readable by others, not even for a moment.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)
    tmp.replace(settings.env_file)
    return settings.env_file


def images_from_env(settings: Settings) -> Images:
    values = read_env_file(settings.env_file)
    if not values:
        raise ComposeError(
            f"no env file at {settings.env_file}; run `make compose-up` (or `python -m immutable.compose up`) first"
        )
    return Images(values["BASE_IMAGE"], values["AIRFLOW_IMAGE"], values["POSTGRES_IMAGE"], values["REDIS_IMAGE"])


# --- docker-compose ------------------------------------------------------------------------


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

    return list(docker_client().containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}))


def project_networks(project: str) -> list[Any]:
    from immutable.images.engine import docker_client

    return list(docker_client().networks.list(filters={"label": f"{PROJECT_LABEL}={project}"}))


def restart_counts(project: str) -> dict[str, int]:
    """How often each container of the project was restarted by its policy, by container id."""
    return {c.id: int(c.attrs.get("RestartCount") or 0) for c in project_containers(project)}


def container_logs(containers: list[Any], names: list[str], lines: int = 30) -> str:
    """The last `lines` log lines of the containers named in `names` (or of all, if none is)."""
    chosen = [c for c in containers if any(c.name in n for n in names)] or containers
    return "\n".join(f"--- {c.name}\n{c.logs(tail=lines).decode(errors='replace')}" for c in chosen)


def unhealthy(containers: list[Any], restarts_before: dict[str, int] | None = None) -> tuple[list[str], list[str]]:
    """(containers still starting, containers that failed) of the project. A container restarted
    by its policy more often than `restarts_before` says (before this `up`) has crashed."""
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
        if state["Status"] in ("exited", "dead") or health == "unhealthy" or crashed:
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
            logs = container_logs(containers, failed)
            raise ComposeError(f"compose project {settings.project}: {', '.join(failed)}\n{logs}")
        if not waiting and not missing:
            return
        status = f"waiting for {', '.join(sorted(waiting) + missing)}"
        if status != last:
            say(status)
            last = status
        if time.monotonic() > deadline:
            raise ComposeError(f"compose project {settings.project} not healthy after {timeout_s:.0f}s: {status}")
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


# --- commands ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="immutable.compose", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the three images FROM the current base image")
    sub.add_parser("env", help="build, then write the env file (credentials kept if it exists)")
    start = sub.add_parser("up", help="build, write the env file, start, wait until healthy")
    start.add_argument(
        "--workers", type=int, default=None, help="Celery workers (default IMMUTABLE_COMPOSE_WORKERS or 2)"
    )
    start.add_argument("--no-build", action="store_true", help="reuse the images the env file names")
    stop = sub.add_parser("down", help="remove the stack's containers and network; the database stays")
    stop.add_argument("--volumes", action="store_true", help="also remove the database and auth volumes")
    sub.add_parser("status", help="docker-compose ps")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    started = time.monotonic()
    try:
        if args.command == "build":
            build_images(official_images=settings.official_images)
        elif args.command == "env":
            say(f"env file: {write_env_file(settings, build_images(official_images=settings.official_images))}")
        elif args.command == "up":
            up(settings, build=not args.no_build, workers=args.workers)
        elif args.command == "down":
            for leftover in down(settings, volumes=args.volumes):
                say(f"removed leftover {leftover}")
            say(
                f"project {settings.project}: no container or network left"
                + ("; volumes removed" if args.volumes else "; database volume kept")
            )
        elif args.command == "status":
            print(compose(settings, "ps", capture=True), end="")
    except ComposeError as exc:
        sys.exit(f"[immutable compose] {exc}")
    say(f"done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
