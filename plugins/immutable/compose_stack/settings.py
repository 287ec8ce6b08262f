"""Where the compose stack runs: its settings (ports, worker count, folders) read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from immutable.config import state_dir
from immutable.paths import PLATFORM_FILE


class ComposeError(RuntimeError):
    pass


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
