"""The compose stack's settings, checked without Docker: which compose program runs
(IMMUTABLE_COMPOSE_PROGRAM, refused before anything is built or started) and the env file of
credentials."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from immutable.compose import ComposeError, compose_program


def test_an_unknown_compose_program_is_refused_naming_the_allowed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMMUTABLE_COMPOSE_PROGRAM", "podman-compose")
    with pytest.raises(
        ComposeError, match=r"IMMUTABLE_COMPOSE_PROGRAM is 'podman-compose'; allowed: docker-compose, docker compose"
    ):
        compose_program()


def test_a_chosen_program_that_is_not_installed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMMUTABLE_COMPOSE_PROGRAM", "docker-compose")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        ComposeError, match=r"IMMUTABLE_COMPOSE_PROGRAM='docker-compose', but `docker-compose version` fails"
    ):
        compose_program()


def test_the_env_file_is_private_from_the_start_and_keeps_its_secrets(tmp_path: Path) -> None:
    from immutable.compose import Images, Settings, read_env_file, write_env_file

    settings = Settings(
        project="unit",
        airflow_port=1,
        postgres_port=2,
        redis_port=3,
        scheduler_health_port=4,
        workers=2,
        state_dir=tmp_path / "state",
        platform_file=tmp_path / "platform.yaml",
    )
    images = Images("r/base@sha256:" + "0" * 64, "a:x", "p:x", "r:x")
    first = read_env_file(write_env_file(settings, images))
    assert stat.S_IMODE(settings.env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.compose_dir.stat().st_mode) == 0o700
    assert len(first["POSTGRES_PASSWORD"]) >= 32 and first["ADMIN_PASSWORD"] != first["POSTGRES_PASSWORD"]
    # The database volume remembers its password: a second write keeps every secret.
    again = read_env_file(write_env_file(settings, images))
    assert again == first
