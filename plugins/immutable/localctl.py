"""`python -m immutable.localctl up|down|status|airflow-up`: the local platform's process manager.

Used by the Makefile. Starts only what is missing and stops only what it started (pid files
under the state dir, process groups, containers labelled io.immutable.managed).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from immutable.config import load_base_spec, load_platform, state_dir
from immutable.local.services import Service, port_open
from immutable.local.supervisor import COMPONENTS
from immutable.paths import PROJECT_ROOT

AIRFLOW_PORT = int(os.environ.get("IMMUTABLE_AIRFLOW_PORT", "8080"))
AIRFLOW_USER = "admin"


def run_dir() -> Path:
    return state_dir() / "run"


def say(message: str) -> None:
    print(f"[immutable] {message}", flush=True)


# --- Docker engine -------------------------------------------------------------------------


def engine_answers() -> bool:
    import docker

    try:
        docker.from_env(timeout=5).ping()
        return True
    except docker.errors.DockerException:
        return False


ENGINE_WITHOUT_LIVE_RESTORE = (
    " (not started by us, and without live-restore: the fleets would stop whenever it restarts;"
    ' set "live-restore": true and "userland-proxy": false in its daemon.json)'
)


def engine_keeps_containers() -> bool:
    import docker

    return bool(docker.from_env(timeout=5).info().get("LiveRestoreEnabled"))


def engine_service() -> Service:
    return Service(
        name="dockerd",
        # --live-restore: the fleets keep running while the engine restarts (they are reached at their
        # bridge address, local/fleets.py). --userland-proxy=false: a port some container publishes is
        # a kernel NAT rule, not a docker-proxy process that would die with the engine.
        argv=["dockerd", "--host=unix:///var/run/docker.sock", "--live-restore", "--userland-proxy=false"],
        run_dir=run_dir(),
        ready=engine_answers,
        ready_timeout_s=90,
    )


def ensure_engine() -> None:
    if engine_answers():
        say(f"docker engine: answering{'' if engine_keeps_containers() else ENGINE_WITHOUT_LIVE_RESTORE}")
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        sys.exit(
            "[immutable] no Docker engine answers and none can be started here. Install Docker "
            "(Debian: `apt-get install docker.io`, as root) and start it, or set DOCKER_HOST."
        )
    say(f"docker engine: {engine_service().start()}")


# --- registries ---------------------------------------------------------------------------

REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true  # retention deletes manifests; `registry garbage-collect` then frees their blobs
http:
  addr: 127.0.0.1:{port}
"""


def registry_services() -> list[Service]:
    platform = load_platform()
    ports = {"build": platform.local.build_registry_port} | {r.name: r.registry_port for r in platform.regions}
    services = []
    for name, port in ports.items():
        home = state_dir() / "registry" / name
        config = home / "config.yml"
        home.joinpath("data").mkdir(parents=True, exist_ok=True)
        config.write_text(REGISTRY_CONFIG.format(root=home / "data", port=port))
        services.append(
            Service(
                name=f"registry-{name}",
                argv=[registry_binary(), "serve", str(config)],
                run_dir=run_dir(),
                ready=functools.partial(port_open, port),
                ready_timeout_s=30,
                port=port,
            )
        )
    return services


def registry_binary() -> str:
    found = shutil.which("docker-registry") or shutil.which("registry")
    if found is None:
        sys.exit(
            "[immutable] the distribution registry is not installed. Debian: `apt-get install docker-registry`; "
            "elsewhere install the `registry` binary from the distribution project."
        )
    return found


# --- Airflow ------------------------------------------------------------------------------


def airflow_env() -> dict[str, str]:
    home = state_dir() / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__API__PORT": str(AIRFLOW_PORT),
        "AIRFLOW__API__HOST": "127.0.0.1",
        # Task workers report to the API server; it must be the port we chose, not the default.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{AIRFLOW_PORT}/execution/",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # A 2-core machine: 32 idle LocalExecutor workers would only cost memory.
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # A release is a chain of about 20 tasks, and the scheduler's idle second between loops cost
        # each link 0.67 s (median, bench/release_overhead.py): half a second, for a little more CPU.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        # SQLite: a writer waits for the lock instead of failing after pysqlite's default 5 s.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "immutable.sqlite_settings.CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "immutable.sqlite_settings.CONNECT_ARGS",
        "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
        # What `airflow standalone` would choose (we supervise the components ourselves instead):
        # one machine, local workers, the simple auth manager.
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        # the components start their workers as `airflow ...` found on PATH
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }


def airflow_password() -> str:
    """Written before the first start so Airflow uses it instead of inventing one."""
    home = state_dir() / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    path = home / "simple_auth_manager_passwords.json.generated"
    if path.exists():
        return str(json.loads(path.read_text())[AIRFLOW_USER])
    password = os.urandom(9).hex()
    path.write_text(json.dumps({AIRFLOW_USER: password}))
    path.chmod(0o600)
    return password


def airflow_ready() -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{AIRFLOW_PORT}/api/v2/monitor/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def airflow_service() -> Service:
    """Airflow's components under our supervisor (immutable.local.supervisor), which restarts one that dies."""
    airflow = str(Path(sys.executable).parent / "airflow")
    return Service(
        name="airflow",
        argv=[sys.executable, "-m", "immutable.local.supervisor", "--run-dir", str(run_dir()), "--airflow", airflow],
        run_dir=run_dir(),
        ready=airflow_ready,
        port=AIRFLOW_PORT,
        env=airflow_env(),
        cwd=PROJECT_ROOT,
        ready_timeout_s=240,
    )


# --- commands -----------------------------------------------------------------------------


def cmd_engine(_: argparse.Namespace) -> None:
    """What every command needs: the engine, the upstream image, the signing key."""
    from immutable.images.upstream import ensure_upstream
    from immutable.signing import ensure_key, key_path

    ensure_engine()
    say(f"upstream image: {ensure_upstream(load_base_spec())}")
    say(f"signing key: {ensure_key(key_path(load_platform()))}")


def cmd_with_engine(args: argparse.Namespace) -> None:
    """Run a command (the test suite) with what `engine` sets up. An engine started here is
    stopped afterwards, so nothing is left running; one that was already answering (the demo's) is
    left as it was."""
    started_here = not engine_answers()
    cmd_engine(args)
    try:
        code = subprocess.run(args.command).returncode
    finally:
        if started_here:
            say(f"dockerd (started for this command): {engine_service().stop()}")
    sys.exit(code)


def app_health_paths() -> dict[str, str]:
    from immutable.app_spec import load_app_specs

    specs, _ = load_app_specs()
    return {name: spec.runtime.health_path for name, spec in specs.items()}


def production_services() -> list[Service]:
    """Per region a load balancer; once for all, Prometheus and the traffic generator."""
    from immutable.local.loadbalancer import haproxy_service
    from immutable.local.prometheus import prometheus_service
    from immutable.local.traffic import traffic_service

    platform, apps = load_platform(), app_health_paths()
    services = [haproxy_service(platform, region, apps, state_dir()) for region in platform.regions]
    services.append(prometheus_service(platform, state_dir()))
    services.append(traffic_service(platform, state_dir()))  # every app spec, new ones included
    for service in services:
        service.run_dir = run_dir()
    return services


def reconcile_load_balancers() -> None:
    """After a load balancer (re)starts, put the running fleets back in it with their last shares."""
    from immutable.local.fleets import LocalFleets, server_name
    from immutable.local.loadbalancer import LoadBalancer

    platform = load_platform()
    fleets = LocalFleets(platform, state_dir())
    for region in platform.regions:
        lb = LoadBalancer(region, state_dir())
        for app in app_health_paths():
            members = fleets.members(app, region.name)
            by_color: dict[str, int] = {}
            for member in members:
                by_color[member.color] = by_color.get(member.color, 0) + 1
                lb.add_server(app, server_name(member.color, by_color[member.color]), member.address, member.port)
            if members:
                say(f"{region.name}: {app}: restored shares {lb.restore(app)}")


def cmd_up(args: argparse.Namespace) -> None:
    cmd_engine(args)
    for service in registry_services():
        say(f"{service.name}: {service.start()}")
    restarted = False
    for service in production_services():
        outcome = service.start()
        restarted |= outcome.startswith("started") and service.name.startswith("haproxy")
        say(f"{service.name}: {outcome}")
    if restarted:
        reconcile_load_balancers()


def airflow_health() -> dict[str, Any]:
    """Airflow's own word on its components (their heartbeats), or {} when its API does not answer."""
    import httpx

    try:
        response = httpx.get(f"http://127.0.0.1:{AIRFLOW_PORT}/api/v2/monitor/health", timeout=10)
        return dict(response.json()) if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}


def component_lines(health: dict[str, Any], supervised: dict[str, dict[str, Any]], now: float) -> list[str]:
    """One line per Airflow component: its health as Airflow reports it, its pid and restarts."""
    from datetime import datetime

    lines = []
    for name, key in (
        ("api-server", None),
        ("scheduler", "scheduler"),
        ("dag-processor", "dag_processor"),
        ("triggerer", "triggerer"),
    ):
        state = supervised.get(name, {})
        if key is None:
            said = "healthy (answers)" if health else "not answering"
        else:
            report = health.get(key) or {}
            beat = next((v for k, v in report.items() if k.startswith("latest_") and v), None)
            ago = (
                f", heartbeat {max(0.0, now - datetime.fromisoformat(str(beat)).timestamp()):.0f}s ago" if beat else ""
            )
            said = f"{report.get('status') or 'unknown'}{ago}" if health else "unknown (Airflow's API does not answer)"
        process = f"pid {state['pid']}" if state.get("pid") else "not running"
        restarts = state.get("restarts", 0)
        last = f", last {state['last_exit']}" if state.get("last_exit") else ""
        lines.append(f"airflow {name}: {said}; {process}, restarts {restarts}{last}")
    return lines


def cmd_airflow_up(_: argparse.Namespace) -> None:
    password = airflow_password()
    service = airflow_service()
    say(f"airflow (supervised: {', '.join(COMPONENTS)}): {service.start()}")
    say(f"Airflow UI: http://127.0.0.1:{AIRFLOW_PORT}  user: {AIRFLOW_USER}  password: {password}")


def cmd_airflow_down(_: argparse.Namespace) -> None:
    """Stop only Airflow (its whole process group); the platform keeps running."""
    say(f"airflow: {airflow_service().stop()}")


def cmd_down(_: argparse.Namespace) -> None:
    say(f"airflow: {airflow_service().stop()}")
    for service in [*reversed(production_services()), *registry_services()]:
        say(f"{service.name}: {service.stop()}")
    if engine_answers():
        import docker

        from immutable.local.fleets import LABEL_INSTANCE

        client = docker.from_env()
        instance = load_platform().local.instance
        for container in client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"{LABEL_INSTANCE}={instance}"}
        ):
            container.remove(force=True)
            say(f"container {container.name}: removed")
    say(f"dockerd: {engine_service().stop()}")


def cmd_status(_: argparse.Namespace) -> None:
    from immutable.local.supervisor import read_status

    for service in [engine_service(), *registry_services(), *production_services(), airflow_service()]:
        pid = service.pid()
        say(f"{service.name}: {'running, pid ' + str(pid) if pid else 'not started by us'}")
    if airflow_service().pid():
        for line in component_lines(airflow_health(), read_status(run_dir()), time.time()):
            say(line)


def cmd_airflow_env(_: argparse.Namespace) -> None:
    """Print the environment as shell exports, for running `airflow` commands by hand."""
    for key, value in airflow_env().items():
        print(f"export {key}={value}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="immutable.localctl", description=__doc__)
    sub = parser.add_subparsers(required=True)
    for name, func in {
        "engine": cmd_engine,
        "up": cmd_up,
        "airflow-up": cmd_airflow_up,
        "airflow-down": cmd_airflow_down,
        "down": cmd_down,
        "status": cmd_status,
        "airflow-env": cmd_airflow_env,
    }.items():
        sub.add_parser(name).set_defaults(func=func)
    with_engine = sub.add_parser("with-engine", help=cmd_with_engine.__doc__)
    with_engine.add_argument("command", nargs=argparse.REMAINDER)
    with_engine.set_defaults(func=cmd_with_engine)
    args = parser.parse_args(argv)
    started = time.monotonic()
    args.func(args)
    if args.func is not cmd_airflow_env:
        say(f"done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
