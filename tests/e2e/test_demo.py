"""The README's commands as a user runs them: `make demo` twice, the REST API, then `make down`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from immutable.local.services import _process_table, port_open

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / "var" / "e2e"
AIRFLOW_PORT = 8089
REGISTRY_PORTS = [5700, 5701, 5702, 5703]

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("docker_engine")]


def make(target: str, env: dict[str, str], timeout_s: int = 1200) -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"make {target} failed:\n{output[-4000:]}"
    return output


def field(output: str, name: str) -> str:
    match = re.search(rf"^\s+{name}\s+(\S+)", output, re.MULTILINE)
    assert match, f"'{name}' not in the demo's summary:\n{output[-2000:]}"
    return match.group(1)


@pytest.fixture(scope="module")
def demo_env() -> Iterator[dict[str, str]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "IMMUTABLE_", "PYTEST"))}
    env |= {
        "IMMUTABLE_STATE_DIR": str(STATE),
        "IMMUTABLE_PLATFORM_FILE": str(Path(__file__).with_name("platform.yaml")),
        "IMMUTABLE_AIRFLOW_PORT": str(AIRFLOW_PORT),
    }
    if port_open(AIRFLOW_PORT):
        make("down", env)
    shutil.rmtree(STATE, ignore_errors=True)
    yield env
    make("down", env)


def test_demo_builds_the_base_prints_where_it_is_and_down_stops_everything(demo_env: dict[str, str]) -> None:
    from immutable.airflow_api import AirflowApi
    from immutable.registry import RegistryClient

    output = make("demo", demo_env)
    version, digest = field(output, "version"), field(output, "digest")
    assert re.fullmatch(r"\d{4}\.\d{2}\.\d{2}\.\d+", version)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert field(output, "UI") == f"http://127.0.0.1:{AIRFLOW_PORT}"
    assert field(output, "user") == "admin"
    password = field(output, "password")
    assert RegistryClient("127.0.0.1:5700").manifest_digest("immutable/base", "candidate") == digest

    # The REST API refuses a malformed trigger and names the field.
    api = AirflowApi(f"http://127.0.0.1:{AIRFLOW_PORT}", "admin", password)
    refused = api.trigger("base_image", {"reason": "because", "cves": []})
    assert refused.status_code == 400
    assert "reason" in refused.json()["detail"]
    refused = api.trigger("base_image", {"cves": ["CVE-1"]})
    assert refused.status_code == 400
    assert "cves" in refused.json()["detail"]

    # A second run reuses everything: nothing reinstalled, nothing rebuilt, the same candidate.
    again = make("demo", demo_env)
    assert "python requirements: up to date" in again
    assert "already running" in again
    assert "nothing new upstream" in again
    assert field(again, "digest") == digest

    status = make("status", demo_env)
    assert re.search(r"airflow: running, pid \d+", status), status

    pids = [int(p.read_text()) for p in (STATE / "run").glob("*.pid")]
    assert len(pids) == 1 + len(REGISTRY_PORTS)  # airflow standalone and the registries, no dockerd
    groups = {pid: {p for p, (_, g) in _process_table().items() if g == pid} for pid in pids}
    assert len(groups[int((STATE / "run" / "airflow.pid").read_text())]) > 3  # scheduler, api, workers...

    make("down", demo_env)
    alive = set(_process_table())
    for pid, members in groups.items():
        assert not (members | {pid}) & alive, f"processes of group {pid} survived make down"
    for port in [AIRFLOW_PORT, *REGISTRY_PORTS]:
        assert not port_open(port), f"port {port} still open after make down"


def test_bench_prints_its_figures(demo_env: dict[str, str]) -> None:
    output = make("bench", demo_env)
    for figure in (
        "cold build (no cache)",
        "warm build",
        "base image size",
        "common libraries share",
        "parse time",
        "copy wall time, empty regions",
        "app layer(s) not in the base",
        "app-only change, warm cache",
    ):
        assert figure in output, output[-2000:]
