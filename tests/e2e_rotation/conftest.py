"""A second `make demo`, for the base rotation: its tests rebuild the base and wait for the scheduler
to re-release both tiers (about 16 minutes), so they run on their own instance, in their own
pytest-xdist group, beside tests/e2e's (its own ports, state and Airflow; tests/e2e_rotation/platform.yaml)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, demo_instance, run_demo

INSTANCE = "rotation"  # platform.yaml's local.instance: the label on this instance's containers
STATE = ROOT / "var" / "e2e-rotation"
APPS_DIR = ROOT / "var" / "e2e-rotation-apps"
PLATFORM_FILE = Path(__file__).with_name("platform.yaml")
AIRFLOW_PORT = 8095


@pytest.fixture(scope="session")
def demo_env() -> Iterator[dict[str, str]]:
    yield from demo_instance(STATE, PLATFORM_FILE, AIRFLOW_PORT, APPS_DIR)


@pytest.fixture(scope="session")
def demo(demo_env: dict[str, str]) -> dict[str, Any]:
    return run_demo(demo_env)
