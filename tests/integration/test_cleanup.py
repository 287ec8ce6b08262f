"""The suite's own cleanliness check (tests/conftest.py `leftovers`, run when the session ends) finds
what a test leaves behind: here a container planted with the test platform's label."""

from __future__ import annotations

import pytest

from tests.conftest import leftovers

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("docker_engine")]


def test_the_leftover_check_finds_a_container_the_test_platform_left() -> None:
    from immutable.config import load_base_spec
    from immutable.images.engine import docker_client
    from immutable.images.upstream import ensure_upstream

    spec = load_base_spec()
    ensure_upstream(spec)
    planted = docker_client().containers.create(
        spec.upstream.image, ["true"], name="test-cleanup-check", labels={"io.immutable.platform": "test"}
    )
    try:
        assert "container test-cleanup-check (platform test)" in leftovers()
    finally:
        planted.remove(force=True)
    assert not [line for line in leftovers() if "test-cleanup-check" in line]
