"""The README's commands as a user runs them: `make demo` (twice), the REST API, a scheduler
restart while a gate is deferred, `make status`, `make down` and `make bench`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from immutable.local.services import _process_table, port_open
from tests.e2e.conftest import (
    AIRFLOW_PORT,
    APP,
    CRITICAL_APP,
    PLATFORM_FILE,
    PLATFORM_PORTS,
    REGIONS,
    ROOT,
    STATE,
    api,
    field,
    make,
    why_failed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("docker_engine")]


def summary_rows(output: str) -> dict[tuple[str, str], list[str]]:
    """(app, region) -> the summary's row: app, tier, region, version, color, digest, base version and
    digest, kept version and color."""
    section = output.split("=== what runs where ===", 1)[1].split("===", 1)[0]
    rows = [line.split() for line in section.strip().splitlines()[1:]]
    return {(row[0], row[2]): row for row in rows}


def test_the_demo_tells_the_whole_story(demo: dict[str, Any]) -> None:
    from immutable.registry import RegistryClient

    output = demo["output"]
    digest = field(output, "digest")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert RegistryClient("127.0.0.1:5700").manifest_digest("immutable/base", "candidate") == digest
    assert field(output, "UI") == f"http://127.0.0.1:{AIRFLOW_PORT}"
    # The candidate is a routine rebuild (the demo's, or the weekly run the scheduler started when the
    # DAG was unpaused): it names no CVE, and the summary says there was nothing to prove.
    candidate_section = output.split("=== base image candidate ===", 1)[1].split("===", 1)[0]
    assert re.search(r"^\s+reason\s+(manual|weekly)$", candidate_section, re.MULTILINE), candidate_section
    assert re.search(r"^\s+verified\s+no CVE named", candidate_section, re.MULTILINE), candidate_section
    assert field(output, "user") == "admin"
    rows = summary_rows(output)
    labels = RegistryClient("127.0.0.1:5700").labels("immutable/base", digest) or {}
    candidate = labels["org.opencontainers.image.version"]
    # promote_base made the candidate stable once the canary tier ran it everywhere; the critical tier
    # was released on it.
    assert RegistryClient("127.0.0.1:5700").manifest_digest("immutable/base", "stable") == digest
    for region in REGIONS:
        sample, critical = rows[APP, region], rows[CRITICAL_APP, region]
        assert sample[1:4] == ["canary", region, "1.1.0"], sample
        assert sample[6:8] == [candidate, digest[:19]], sample  # the base under the live image
        assert sample[-2] == "1.0.0", sample  # kept for rollback
        assert critical[1:4] == ["critical", region, "1.0.0"], critical
        assert critical[6:8] == [candidate, digest[:19]], critical
        assert critical[-1] == "-", critical  # a first release keeps nothing
    # Each app's SBOM, where a person reads it: valid CycloneDX, describing the live image.
    from immutable.sbom import validate

    sboms = output.split("=== SBOMs (CycloneDX, signed with the image) ===", 1)[1].split("===", 1)[0]
    for app, version in ((APP, "1.1.0"), (CRITICAL_APP, "1.0.0")):
        [url] = re.findall(
            rf"^\s+{re.escape(app)}\s+{version}\s+(http://\S+/blobs/sha256:[0-9a-f]{{64}})$", sboms, re.M
        )
        document = httpx.get(url, timeout=10).text
        validate(document)
        assert json.loads(document)["metadata"]["component"]["version"] == version, document[:500]
    # The base's SBOM too: its Debian packages, for the candidate's version.
    base_sbom = httpx.get(field(output, "sbom"), timeout=10).text
    validate(base_sbom)
    assert json.loads(base_sbom)["metadata"]["component"]["version"] == candidate, base_sbom[:500]
    bases = output.split("=== bases ===", 1)[1].split("===", 1)[0]
    assert f"Stable base: {candidate} ({digest})" in bases and "Every app runs on the stable base" in bases, bases
    rolled_back = output.split("=== rolled back ===", 1)[1]
    assert f"{APP} 1.2.0" in rolled_back and "failed its analysis" in rolled_back
    # 1.2.0 raises both its error rate and its latency: the first interval may catch either first.
    assert re.search(r"failed its analysis in \S+ on (error_rate|latency_p90_s)", rolled_back), rolled_back
    assert "canary.analysis" in output and "deferred" in output


def test_the_scheduler_ran_the_base_rotation_the_demo_relied_on(demo: dict[str, Any]) -> None:
    """The demo triggered releases with versions; the Assets did the rest: promote_base ran after the
    canary tier's release and promoted, and the stable base scheduled the critical tier's DAG (which had
    nothing to re-release yet, or already ran that base)."""
    client = api(demo["password"])
    promotions = [
        run
        for run in client.get("/dags/promote_base/dagRuns", limit=50)["dag_runs"]
        if run["run_type"] == "asset_triggered"
        and client.task_states("promote_base", run["dag_run_id"]).get("promote") == "success"
    ]
    assert len(promotions) == 1, promotions
    scheduled = [
        run
        for run in client.get(f"/dags/release_{CRITICAL_APP}/dagRuns", limit=50)["dag_runs"]
        if run["run_type"] == "asset_triggered"
    ]
    assert len(scheduled) == 1, scheduled
    run_id = scheduled[0]["dag_run_id"]
    assert client.task_states(f"release_{CRITICAL_APP}", run_id)["validate"] == "skipped"
    reason = client.task_log(f"release_{CRITICAL_APP}", run_id, "validate")
    assert "runs nothing in eu-west yet" in reason or "already runs 1.0.0 on base" in reason, reason[-2000:]


def test_bench_release_tells_where_the_demos_last_release_spent_its_time(
    demo: dict[str, Any], demo_env: dict[str, str]
) -> None:
    """`make bench-release` as the README gives it, on the demo's last good release (sample 1.1.0)."""
    output = make("bench-release", demo_env)
    assert "{'version': '1.1.0'" in output, output
    figures = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^  (wall time|work in|wall / work)\D*?([\d.]+)", output, re.M)
    }
    assert set(figures) == {"wall time", "work in", "wall / work"}, output
    # Bodies on one chain never overlap and all lie inside the run: the work is less than the wall
    # time, and it holds the canary's and both post-flip gates' windows (40 + 2 x 23 s here).
    assert 86 < figures["work in"] < figures["wall time"] and figures["wall / work"] > 1.0, output
    path = output.split("critical path (body s / start cost s):", 1)[1].split()
    assert path[0] == "validate" and "release_leases" in path[-3:], path
    assert "canary.analysis" in path and {"wave_2.post_flip_gate[0]", "wave_2.post_flip_gate[1]"} & set(path), path


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
    from immutable.registry import RegistryClient

    candidate_before = RegistryClient("127.0.0.1:5700").manifest_digest("immutable/base", "candidate")
    again = make("demo", demo_env)
    assert "python requirements: up to date" in again
    assert "already running" in again
    assert "nothing new upstream" in again
    assert "1.1.0: already released" in again
    assert f"{'1.2.0'}: already tried" in again
    assert field(again, "digest") == candidate_before  # no new base: the candidate stays where it was


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
    assert client.wait_for_run("release_sample", run_id, timeout_s=1200) == "success", why_failed(
        client, "release_sample", run_id
    )
    from immutable.images.engine import docker_client

    for region in REGIONS:
        members = docker_client().containers.list(
            ignore_removed=True,
            all=True,
            filters={
                "label": [
                    "io.immutable.platform=e2e",
                    "io.immutable.role=fleet",
                    f"io.immutable.app.name={APP}",
                    f"io.immutable.region={region}",
                ]
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


def task_process(ti_id: str) -> int:
    """The pid of the process running a task instance (not the LocalExecutor worker that supervises it)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ti_id in cmdline and "LocalExecutor" not in cmdline:
            return int(proc.name)
    raise AssertionError(f"no process runs task instance {ti_id}")


def restart_docker_engine() -> None:
    """Stop the engine the way an upgrade does (SIGTERM) and start it again with the same command
    line, under the same pid file. Only an engine with live-restore keeps the fleets running."""
    import os
    import signal

    from immutable.local.services import pid_alive
    from immutable.localctl import engine_answers
    from tests.conftest import require

    engines = [pid for pid in _process_table() if Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"]
    assert len(engines) == 1, f"expected one dockerd, found {engines}"
    [pid] = engines
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    require("a Docker engine with live-restore", b"--live-restore" in argv, "start it with `make engine` (as root)")
    pid_files = [f for f in ROOT.glob("var/*/dockerd.pid") if f.read_text().strip() == str(pid)]
    pid_files += [f for f in ROOT.glob("var/*/run/dockerd.pid") if f.read_text().strip() == str(pid)]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pid_alive(pid):
        assert time.monotonic() < deadline, "dockerd did not stop within 60s"
        time.sleep(0.2)
    with open(ROOT / "var" / "dockerd-restarted.log", "ab") as log:
        started = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for pid_file in pid_files:  # so `make down` (or the end of `make test`) stops the new one
        pid_file.write_text(str(started.pid))
    while not engine_answers():
        assert time.monotonic() < deadline + 60, "dockerd did not answer within 60s of its restart"
        time.sleep(0.5)


def fleet_containers() -> dict[str, tuple[str, str]]:
    from immutable.images.engine import docker_client

    found = docker_client().containers.list(
        ignore_removed=True, all=True, filters={"label": ["io.immutable.platform=e2e"]}
    )
    return {c.name: (c.id, c.status) for c in found}


def gate_log(client: Any, run_id: str) -> str:
    path = f"/dags/release_sample/dagRuns/{run_id}/taskInstances/canary.analysis"
    tries = int(client.get(path)["try_number"])
    return "\n".join(client.task_log("release_sample", run_id, "canary.analysis", n) for n in range(1, tries + 1))


@pytest.mark.changes_the_demo
@pytest.mark.restarts_docker_engine
def test_faults_during_a_good_release_lose_nothing(demo: dict[str, Any], demo_env: dict[str, str]) -> None:
    """Fault drills, in one good release, each while its canary gate waits in the triggerer:
    - the pilot region's load balancer is killed and brought back by `make up`: the gate judges no
      window in which it was down (its log says so) and the release goes on;
    - `kill -9` of the triggerer: the supervisor restarts it and the new one judges the gate;
    - the Docker engine restarts: with live-restore every fleet container keeps running, unchanged.
    Then `kill -9` of the pilot's flip task between its weight steps (half the traffic on each
    color): the retry flips again from the first step. The release succeeds, one color serves
    everywhere, no user request failed except at the load balancer while it was down, and the
    supervisor's log and `make status` name what happened."""
    import os
    import signal

    from immutable.config import load_platform
    from immutable.local.loadbalancer import LoadBalancer
    from immutable.local.supervisor import read_status
    from immutable.local.traffic import failures_between

    client = api(demo["password"])
    started = time.time()
    run_id = client.trigger_ok("release_sample", {"version": "1.4.0"})
    wait_for_deferred_gate(client, run_id)
    time.sleep(6)  # past the canary's warm-up (5 s): its first window has begun

    lb_pid = int((STATE / "run" / f"haproxy-{REGIONS[0]}.pid").read_text())
    lb_killed_at = time.time()
    os.kill(lb_pid, signal.SIGKILL)
    time.sleep(3)
    assert "haproxy-eu-west: started" in make("up", demo_env)
    lb_back_at = time.time()
    assert client.task_states("release_sample", run_id)["canary.analysis"] == "deferred"

    before = read_status(STATE / "run")["triggerer"]
    os.kill(int(before["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (now := read_status(STATE / "run")["triggerer"])["restarts"] <= before["restarts"] or not now["pid"]:
        assert time.monotonic() < deadline, f"the triggerer was not restarted: {now}"
        time.sleep(0.5)
    assert now["pid"] != before["pid"]

    containers = fleet_containers()
    assert {status for _, status in containers.values()} == {"running"}, containers
    engine_restarted_at = time.time()
    restart_docker_engine()
    assert fleet_containers() == containers  # the same containers, all still running: none lost, none new
    assert client.task_states("release_sample", run_id)["canary.analysis"] == "deferred"

    pilot = load_platform(PLATFORM_FILE).region(REGIONS[0])
    path = f"/dags/release_sample/dagRuns/{run_id}/taskInstances/wave_1.flip/0"
    deadline = time.monotonic() + 900
    while True:
        states = client.task_states("release_sample", run_id)
        assert time.monotonic() < deadline, states
        flip_state = states.get("wave_1.flip[0]")
        assert flip_state not in ("success", "failed", "upstream_failed"), f"the flip ended before the drill: {states}"
        shares = LoadBalancer(pilot, STATE).shares(APP) if flip_state == "running" else {}
        if sorted(v for v in shares.values() if v) == [50.0, 50.0]:
            flip = client.get(path)
            break
        time.sleep(0.1)
    os.kill(task_process(str(flip["id"])), signal.SIGKILL)

    assert client.wait_for_run("release_sample", run_id, timeout_s=1200) == "success", why_failed(
        client, "release_sample", run_id
    )
    states = client.task_states("release_sample", run_id)
    assert states["canary.analysis"] == "success" and states["wave_1.flip[0]"] == "success", states
    assert client.get(path)["try_number"] >= 2  # the killed try, then the one that flipped
    for region in REGIONS:
        shares = LoadBalancer(load_platform(PLATFORM_FILE).region(region), STATE).shares(APP)
        assert sorted(v for v in shares.values() if v) == [100.0], (region, shares)  # one live color

    # Users' requests failed only at the pilot's load balancer while it was down; none otherwise. A
    # failure counts before the drills by when it failed (sent + elapsed): a request in flight when the
    # load balancer was killed was sent before the kill, and failed with it.
    failures = failures_between(STATE, started, time.time())
    failed_before = [f for f in failures if f["time"] + float(f.get("elapsed_s") or 0) < lb_killed_at]
    assert failed_before == [], "user requests failed before the drills"
    failed_after = [f for f in failures if f["time"] > lb_back_at]
    assert failed_after == [], "requests failed after the load balancer was back"
    during = [f for f in failures if f not in failed_before and f not in failed_after]
    assert {f.get("region") for f in during} <= {REGIONS[0]}, during
    assert engine_restarted_at > lb_back_at  # so the engine restart lies in the window that had no failure

    log = gate_log(client, run_id)
    assert f"cannot be judged: region {REGIONS[0]}'s load balancer did not answer Prometheus" in log, log[-3000:]
    assert "the load balancer serves again" in log, log[-3000:]
    supervisor_log = (STATE / "run" / "airflow.log").read_text()
    assert "triggerer killed by signal 9 (SIGKILL) after" in supervisor_log, supervisor_log[-2000:]
    status = make("status", demo_env)
    assert re.search(
        r"airflow triggerer: healthy, heartbeat \d+s ago; pid \d+, restarts [1-9]\d*, last killed by signal 9", status
    ), status


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

    left = docker_client().containers.list(
        ignore_removed=True, all=True, filters={"label": "io.immutable.platform=e2e"}
    )
    assert left == [], [c.name for c in left]
