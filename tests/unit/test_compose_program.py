"""Which compose program `python -m immutable.compose` runs: IMMUTABLE_COMPOSE_PROGRAM is checked
before anything is built or started."""

from __future__ import annotations

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
