"""The docker-compose stack of the repo root, run for real: its own platform (tests/compose/platform.yaml,
state in var/compose-test), its own compose project and ports (Airflow 8093, Postgres 5840, Redis 5841,
the scheduler's health check 8894), so it runs beside the demo and the other tests.

The images are built once per session FROM the base image that the `base_candidate` fixture built
(copied, by digest, into this platform's build registry); the engine's cache makes a rebuild on the
same base take seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import engine_held_for_module, require

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / "var" / "compose-test"
PLATFORM_FILE = Path(__file__).with_name("platform.yaml")
PROJECT = "immutable-compose-test"
AIRFLOW_PORT = 8093
AIRFLOW_URL = f"http://127.0.0.1:{AIRFLOW_PORT}"
BUILD_REGISTRY = "127.0.0.1:5800"
INSTANCE = "compose"  # the platform file's local.instance: the label on this platform's fleets
WORKERS = 2


def compose_env() -> dict[str, str]:
    """The environment of `python -m immutable.compose` and `localctl` for this stack alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "IMMUTABLE_", "PYTEST"))}
    return (
        env
        | {
            "IMMUTABLE_STATE_DIR": str(STATE),
            "IMMUTABLE_PLATFORM_FILE": str(PLATFORM_FILE),
            "IMMUTABLE_COMPOSE_PROJECT": PROJECT,
            "IMMUTABLE_COMPOSE_AIRFLOW_PORT": str(AIRFLOW_PORT),
            "IMMUTABLE_COMPOSE_POSTGRES_PORT": "5840",
            "IMMUTABLE_COMPOSE_REDIS_PORT": "5841",
            "IMMUTABLE_COMPOSE_SCHEDULER_HEALTH_PORT": "8894",
            "IMMUTABLE_COMPOSE_WORKERS": str(WORKERS),
            "PYTHONPATH": str(ROOT / "plugins"),
        }
        | {k: v for k, v in os.environ.items() if k == "IMMUTABLE_COMPOSE_PROGRAM"}
    )


def run_module(module: str, *args: str, timeout_s: int = 1800) -> str:
    """`python -m <module> <args>` with this stack's environment; fails the test with its output."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=compose_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"python -m {module} {' '.join(args)} failed:\n{output[-6000:]}"
    return output


def env_file_values() -> dict[str, str]:
    from immutable.compose import read_env_file

    return read_env_file(STATE / "compose" / "airflow.env")


def ours(kind: str) -> list[Any]:
    """Containers, networks or volumes of the test's compose project."""
    from immutable.images.engine import docker_client

    client = docker_client()
    collection = {"containers": client.containers, "networks": client.networks, "volumes": client.volumes}[kind]
    extra = {"all": True} if kind == "containers" else {}
    return list(collection.list(filters={"label": f"com.docker.compose.project={PROJECT}"}, **extra))


@dataclass
class Stack:
    password: str
    base: str  # the base image's digest, the Airflow image's FROM
    up_s: float  # seconds the first `up` took, images built included

    def api(self) -> Any:
        from immutable.airflow_api import AirflowApi

        return AirflowApi(AIRFLOW_URL, "admin", self.password)


@pytest.fixture(scope="session")
def compose_tool() -> None:
    from immutable.compose import ComposeError, compose_program

    try:
        compose_program()
        found = True
    except ComposeError:
        found = False
    require("docker-compose", found, "Debian: `apt-get install docker-compose` (setup installs it)")


@pytest.fixture(scope="module")
def compose_platform(compose_tool: None, base_candidate: str) -> Iterator[str]:
    """This stack's registries, load balancers, Prometheus and traffic, from a clean slate, with the
    session's base candidate in its build registry. Yields the base digest. For the module only, and
    with the Docker engine held (no restart meanwhile: the stack's workers mount its socket)."""
    run_module("immutable.compose", "down", "--volumes")
    run_module("immutable.localctl", "down")
    shutil.rmtree(STATE, ignore_errors=True)
    with engine_held_for_module("compose"), _platform_up(base_candidate) as digest:
        yield digest


@contextlib.contextmanager
def _platform_up(base_candidate: str) -> Generator[str]:
    from immutable.config import load_platform
    from immutable.images.replicate import copy_image
    from immutable.registry import RegistryClient

    try:
        run_module("immutable.localctl", "up")
        source = RegistryClient(load_platform().build_registry)  # the session's platform: tests/platform.yaml
        copy_image(source, RegistryClient(BUILD_REGISTRY), "immutable/base", base_candidate, ["candidate"])
        yield base_candidate
    finally:
        try:
            run_module("immutable.compose", "down", "--volumes")
        finally:
            run_module("immutable.localctl", "down")


@pytest.fixture(scope="module")
def stack(compose_platform: str) -> Stack:
    started = time.monotonic()
    output = run_module("immutable.compose", "up")
    up_s = time.monotonic() - started
    print(f"\n[compose test] images built and stack healthy in {up_s:.0f}s\n{output[-1500:]}")
    return Stack(password=env_file_values()["ADMIN_PASSWORD"], base=compose_platform, up_s=up_s)
