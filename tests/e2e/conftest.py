"""One `make demo` for the whole end-to-end session: the REST tests and the browser tests read the
same run (the demo takes about 15 minutes here). Tests that only read what the demo left run
first, then those marked `changes_the_demo`, then those marked `stops_the_demo`."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / "var" / "e2e"
ARTIFACTS = STATE / "artifacts"  # screenshots and page text the browser test leaves for people to look at
# A copy of include/apps/*.yaml, so a test can change a spec the running Airflow reads (beside the
# state folder, which each session starts without: every command, `make down` too, reads the specs).
APPS_DIR = ROOT / "var" / "e2e-apps"
PLATFORM_FILE = Path(__file__).with_name("platform.yaml")
AIRFLOW_PORT = 8089
AIRFLOW_URL = f"http://127.0.0.1:{AIRFLOW_PORT}"
WEBHOOK_PORT = 8798  # platform.yaml's notifications.webhooks: the approval and stop tests listen here
PLATFORM_PORTS = [5700, 5701, 5702, 5703, 8701, 8702, 8703, 8751, 8752, 8753, 9790]
REGIONS = ["eu-west", "us-east", "ap-south"]
APP = "sample"  # the canary tier
CRITICAL_APP = "sample-critical"  # the critical tier
BAD_VERSION = "1.2.0"  # the demo's release that the canary stops


ORDER = ("changes_the_demo", "stops_the_demo")  # markers, in the order their tests run after the others


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "changes_the_demo: changes what the demo left; runs after the tests reading it")
    config.addinivalue_line("markers", "stops_the_demo: stops the demo's Airflow and platform; runs after the rest")


def run_order(item: pytest.Item) -> int:
    return max((n + 1 for n, marker in enumerate(ORDER) if item.get_closest_marker(marker)), default=0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whatever the file order: first the tests that read what the demo left, then those that change
    it, then those that stop it; all in this folder's place in the session (so the demo is not left
    running while other folders' tests run)."""
    here = Path(__file__).parent
    places = [n for n, item in enumerate(items) if here in item.path.parents]
    ours = sorted((items[n] for n in places), key=run_order)
    for n, item in zip(places, ours, strict=True):
        items[n] = item


def field(output: str, name: str) -> str:
    match = re.search(rf"^\s+{name}\s+(\S+)", output, re.MULTILINE)
    assert match, f"'{name}' not in the demo's summary:\n{output[-3000:]}"
    return match.group(1)


def live_versions() -> dict[str, str | None]:
    """The sample's live version per region, read from the e2e platform (its load balancers and fleets)."""
    from immutable.config import load_platform
    from immutable.local.production import LocalProduction

    production = LocalProduction(load_platform(PLATFORM_FILE), STATE)
    return {region: (production.live(APP, region) or {}).get("version") for region in REGIONS}


def api(password: str) -> Any:
    from immutable.airflow_api import AirflowApi

    return AirflowApi(AIRFLOW_URL, "admin", password)


def why_failed(client: Any, dag_id: str, run_id: str) -> str:
    """A run's cause as the demo tells it (a failed gate's sentence first): an assertion's message."""
    from immutable.demo import failure_cause

    return failure_cause(client, dag_id, run_id, client.task_states(dag_id, run_id))


def releases_api(password: str) -> dict[str, Any]:
    """The Releases page's JSON, as a signed-in user reads it: what runs where, on which base."""
    import httpx

    token = httpx.post(f"{AIRFLOW_URL}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    signed_in = {"Authorization": f"Bearer {token.json()['access_token']}"}
    served: dict[str, Any] = httpx.get(f"{AIRFLOW_URL}/releases/api", headers=signed_in, timeout=60).json()
    return served


@pytest.fixture(scope="session")
def demo_env() -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "IMMUTABLE_", "PYTEST"))}
    env |= {
        "IMMUTABLE_STATE_DIR": str(STATE),
        "IMMUTABLE_PLATFORM_FILE": str(PLATFORM_FILE),
        "IMMUTABLE_AIRFLOW_PORT": str(AIRFLOW_PORT),
        "IMMUTABLE_APPS_DIR": str(APPS_DIR),
        # Every DAG file once a minute, not every 30 s: under the suite's load each parse of the release
        # and rollback files took 13 to 15 s, and the two parsing processes were nearly always busy.
        # Only the approval tests change a spec; they wait up to 3 minutes for its parse.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
    }
    shutil.rmtree(APPS_DIR, ignore_errors=True)
    APPS_DIR.mkdir(parents=True)
    for spec in (ROOT / "include" / "apps").glob("*.yaml"):
        shutil.copy(spec, APPS_DIR / spec.name)
    make("down", env)
    shutil.rmtree(STATE, ignore_errors=True)
    yield env
    make("down", env)


@pytest.fixture(scope="session")
def demo(demo_env: dict[str, str]) -> dict[str, Any]:
    output = make("demo", demo_env)
    return {"output": output, "password": field(output, "password")}
