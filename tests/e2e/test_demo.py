"""The README's commands as a user runs them: `make demo` (twice), the REST API, a scheduler
restart while a gate is deferred, `make status`, `make down` and `make bench`."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import pytest

from immutable.local.services import _process_table, port_open
from tests.e2e.conftest import AIRFLOW_PORT, PLATFORM_PORTS, REGIONS, ROOT, STATE, api, field, make

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("docker_engine")]


def summary_rows(output: str) -> dict[str, list[str]]:
    section = output.split("=== what runs where ===", 1)[1].split("===", 1)[0]
    return {line.split()[0]: line.split() for line in section.strip().splitlines()[1:]}


def test_the_demo_tells_the_whole_story(demo: dict[str, Any]) -> None:
    from immutable.registry import RegistryClient

    output = demo["output"]
    digest = field(output, "digest")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert RegistryClient("127.0.0.1:5700").manifest_digest("immutable/base", "candidate") == digest
    assert field(output, "UI") == f"http://127.0.0.1:{AIRFLOW_PORT}"
    assert field(output, "user") == "admin"
    rows = summary_rows(output)
    for region in REGIONS:
        assert rows[region][1] == "1.1.0", rows
        assert rows[region][-2] == "1.0.0", rows  # kept for rollback
    rolled_back = output.split("=== rolled back ===", 1)[1]
    assert "1.2.0" in rolled_back and "failed its analysis" in rolled_back
    # 1.2.0 raises both its error rate and its latency: the first interval may catch either first.
    assert re.search(r"failed its analysis in \S+ on (error_rate|latency_p90_s)", rolled_back), rolled_back
    assert "canary.analysis" in output and "deferred" in output


def test_the_rest_api_refuses_malformed_triggers_naming_the_field(demo: dict[str, Any]) -> None:
    client = api(demo["password"])
    for dag_id, conf, name in [
        ("base_image", {"reason": "because"}, "reason"),
        ("base_image", {"cves": ["CVE-1"]}, "cves"),
        ("release_sample", {"version": "1.0"}, "version"),
    ]:
        refused = client.trigger(dag_id, conf)
        assert refused.status_code == 400, (dag_id, conf)
        assert name in refused.json()["detail"]


@pytest.mark.changes_the_demo
def test_a_second_demo_reuses_what_is_there(demo: dict[str, Any], demo_env: dict[str, str]) -> None:
    again = make("demo", demo_env)
    assert "python requirements: up to date" in again
    assert "already running" in again
    assert "nothing new upstream" in again
    assert "1.1.0: already released" in again
    assert f"{'1.2.0'}: already tried" in again
    assert field(again, "digest") == field(demo["output"], "digest")


@pytest.mark.changes_the_demo
def test_a_deferred_gate_survives_an_airflow_restart(demo: dict[str, Any], demo_env: dict[str, str]) -> None:
    client = api(demo["password"])
    run_id = client.trigger_ok("release_sample", {"version": "1.3.0"})
    wait_for_deferred_gate(client, run_id)
    # The gate waits in the triggerer: restart all of Airflow (scheduler, triggerer, workers) now.
    stopped = subprocess.run(
        [sys.executable, "-m", "immutable.localctl", "airflow-down"], env=demo_env, cwd=ROOT, capture_output=True
    )
    assert stopped.returncode == 0, stopped.stderr
    make("airflow-up", demo_env)
    client = api(demo["password"])
    assert client.wait_for_run("release_sample", run_id, timeout_s=1200) == "success"
    from immutable.images.engine import docker_client

    for region in REGIONS:
        members = docker_client().containers.list(
            all=True,
            filters={
                "label": ["io.immutable.platform=e2e", "io.immutable.role=fleet", f"io.immutable.region={region}"]
            },
        )
        colors = sorted(m.labels["io.immutable.color"] for m in members)
        assert colors == ["blue", "blue", "green", "green"], (region, colors)  # one fleet per color, no canary
        versions = {m.labels["io.immutable.version"] for m in members}
        assert versions == {"1.1.0", "1.3.0"}, (region, versions)


def wait_for_deferred_gate(client: Any, run_id: str) -> None:
    from immutable.airflow_api import TERMINAL_RUN_STATES

    deadline = time.monotonic() + 900
    while client.task_states("release_sample", run_id).get("canary.analysis") != "deferred":
        assert time.monotonic() < deadline, client.task_states("release_sample", run_id)
        assert client.get(f"/dags/release_sample/dagRuns/{run_id}")["state"] not in TERMINAL_RUN_STATES
        time.sleep(1)


@pytest.mark.stops_the_demo
def test_status_then_down_leaves_nothing_behind(demo: dict[str, Any], demo_env: dict[str, str]) -> None:
    status = make("status", demo_env)
    assert re.search(r"airflow: running, pid \d+", status), status
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert re.search(rf"airflow {component}: healthy.*; pid \d+, restarts \d+", status), status
    assert re.search(r"haproxy-eu-west: running, pid \d+|eu-west.*running, pid", status), status
    pids = [int(p.read_text()) for p in (STATE / "run").glob("*.pid")]
    groups = {pid: {p for p, (_, g) in _process_table().items() if g == pid} for pid in pids}
    make("down", demo_env)
    alive = set(_process_table())
    for pid, members in groups.items():
        assert not (members | {pid}) & alive, f"processes of group {pid} survived make down"
    for port in [AIRFLOW_PORT, *PLATFORM_PORTS]:
        assert not port_open(port), f"port {port} still open after make down"
    from immutable.images.engine import docker_client

    left = docker_client().containers.list(all=True, filters={"label": "io.immutable.platform=e2e"})
    assert left == [], [c.name for c in left]


@pytest.mark.stops_the_demo
def test_bench_prints_its_figures(demo_env: dict[str, str]) -> None:
    """`make bench` as the README gives it, with fewer repetitions (the figures' kinds are the same)."""
    output = make("bench", demo_env | {"IMMUTABLE_BENCH_QUICK": "1"})
    assert "IMMUTABLE_BENCH_QUICK=1: fewer repetitions" in output
    for figure in (
        "cold build (no cache)",
        "warm build",
        "base image size",
        "common libraries share",
        "parse time",
        "copy wall time, empty regions",
        "app layer(s) not in the base",
        "app-only change, warm cache",
        "LB reports 100% on the new color",
        "failed requests (>= 500 or no answer)",
        "ratio redeploy / flip back",
        "Hostile config files: time and peak memory to refuse",
    ):
        assert figure in output, output[-2000:]
