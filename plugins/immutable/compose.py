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
import os
import socket
import sys
import time

# The work is done in immutable.compose_stack (settings, images, env_file, stack); this module is
# the command line and Airflow's hostname callable, and names the parts for the importers.
from immutable.compose_stack.env_file import env_values, images_from_env, read_env_file, write_env_file
from immutable.compose_stack.images import Images, build_images, current_base
from immutable.compose_stack.settings import ComposeError, Settings, say
from immutable.compose_stack.stack import (
    compose,
    compose_command,
    compose_program,
    down,
    project_containers,
    sweep,
    up,
    wait_healthy,
)

__all__ = [
    "ComposeError",
    "Images",
    "Settings",
    "build_images",
    "compose",
    "compose_command",
    "compose_program",
    "current_base",
    "down",
    "env_values",
    "images_from_env",
    "main",
    "project_containers",
    "read_env_file",
    "say",
    "sweep",
    "up",
    "wait_healthy",
    "worker_hostname",
    "write_env_file",
]


def worker_hostname() -> str:
    """Airflow's hostname_callable in the stack: the containers share the host's network, so the
    host's name alone cannot tell two workers apart; the entrypoint sets `<host>-<container id>`."""
    return os.environ.get("IMMUTABLE_HOSTNAME") or socket.getfqdn()


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
