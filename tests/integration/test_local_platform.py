"""The local platform's production pieces on real processes: HAProxy, Prometheus, the traffic generator.

Stand-in backends (tiny Python HTTP servers) play the app containers: /healthz answers 200, /
answers their color, /metrics serves Prometheus text. Everything listens on 127.0.0.1 and every
process started here is stopped in a fixture's teardown, also when a test fails.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from immutable.config import PlatformConfig, Region, load_platform, state_dir
from immutable.local.loadbalancer import (
    LoadBalancer,
    LoadBalancerError,
    ServerState,
    backend_name,
    compute_weights,
    haproxy_binary,
    haproxy_service,
    render_config,
)
from immutable.local.prometheus import (
    AsyncPrometheusClient,
    PrometheusClient,
    PrometheusError,
    prometheus_service,
    remove_targets,
    write_targets,
)
from immutable.local.services import Service, port_open
from immutable.local.traffic import failures_between, read_stats, traffic_service
from tests.conftest import require

pytestmark = pytest.mark.integration

APPS = {"sample": "/healthz", "other": "/healthz"}
REQUESTS_PER_CHECK = 60
TRAFFIC_RPS = 60.0  # per region, for the flip test: more requests in flight during each flip
FLIPS = 8
FLIP_PAUSE_S = 0.6
WAIT_S = 25.0

BACKEND = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, color = int(sys.argv[1]), sys.argv[2]
served = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real app servers do

    def do_GET(self):
        global served
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/metrics":
            body = f"# TYPE standin_requests_total counter\nstandin_requests_total {served}\n".encode()
        elif self.path == "/":
            served += 1
            body = color.encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: object, timeout_s: float = WAIT_S) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what}: not true within {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def platform() -> PlatformConfig:
    return load_platform()


@pytest.fixture(scope="module")
def region(platform: PlatformConfig) -> Region:
    return platform.regions[0]


def standin(name: str) -> tuple[int, Service]:
    """A stand-in app container for the server `name` (<color>-<n>) and its free port; not started."""
    port = free_port()
    return port, Service(
        name=f"standin-{name}",
        argv=[sys.executable, "-c", BACKEND, str(port), name.split("-")[0]],
        run_dir=state_dir() / "run",
        ready=functools.partial(port_open, port),
        ready_timeout_s=10,
        port=port,
    )


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, int]]:
    """Stand-in app containers: {server name: port}."""
    services = {}
    ports = {}
    try:
        for name in ("blue-1", "green-1", "green-2"):
            port, service = standin(name)
            service.stop()
            service.start()
            services[name], ports[name] = service, port
        yield ports
    finally:
        for service in services.values():
            service.stop()


@pytest.fixture(scope="module")
def lb(platform: PlatformConfig, region: Region) -> Iterator[LoadBalancer]:
    require("HAProxy", _has_haproxy(), "Debian: `apt-get install haproxy` (2.6+, with the Prometheus exporter)")
    shutil.rmtree(state_dir() / "haproxy" / region.name, ignore_errors=True)
    service = haproxy_service(platform, region, APPS, state_dir())
    service.stop()
    try:
        service.start()
        yield LoadBalancer(region, state_dir())
    finally:
        service.stop()


def _has_haproxy() -> bool:
    try:
        haproxy_binary()
    except LoadBalancerError:
        return False
    return True


def through_lb(region: Region, host: str = "sample", count: int = REQUESTS_PER_CHECK) -> collections.Counter[str]:
    """Bodies (colors) of `count` requests sent through the region's load balancer."""
    seen: collections.Counter[str] = collections.Counter()
    with httpx.Client(timeout=5) as client:
        for _ in range(count):
            response = client.get(f"http://127.0.0.1:{region.lb_port}/", headers={"Host": host})
            seen[response.text if response.status_code == 200 else str(response.status_code)] += 1
    return seen


def add_all(lb: LoadBalancer, backends: dict[str, int]) -> None:
    for name, port in backends.items():
        lb.add_server("sample", name, "127.0.0.1", port)


def test_weights_split_each_share_over_its_servers() -> None:
    weights = compute_weights({"blue": ["blue-1"], "green": ["green-1", "green-2"]}, {"blue": 10, "green": 90})
    assert weights == {"blue-1": 57, "green-1": 256, "green-2": 256}
    assert compute_weights({"blue": ["blue-1"], "green": ["green-1"]}, {"green": 100}) == {"blue-1": 0, "green-1": 256}
    with pytest.raises(LoadBalancerError, match="canary"):
        compute_weights({"blue": ["blue-1"]}, {"blue": 90, "canary": 10})
    with pytest.raises(LoadBalancerError, match="sum to 90"):
        compute_weights({"blue": ["blue-1"]}, {"blue": 90})


def test_rendered_config_is_valid_for_haproxy(region: Region, tmp_path: Path) -> None:
    require("HAProxy", _has_haproxy(), "Debian: `apt-get install haproxy`")
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_config(region, list(APPS), tmp_path))
    checked = subprocess.run([haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    directives = [line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "server" not in directives  # servers come at runtime only
    assert "http-request use-service prometheus-exporter if { path /metrics }" in text


def test_a_new_app_is_added_by_a_seamless_reload_that_keeps_every_weight_and_loses_no_request(
    lb: LoadBalancer, region: Region, backends: dict[str, int]
) -> None:
    """`ensure_app` on a running HAProxy: the new backend appears, every server keeps its weight,
    health and maintenance, and requests sent through the reload all succeed."""
    import threading

    add_all(lb, backends)
    lb.set_shares("sample", {"blue": 25, "green": 75})
    lb._expect(f"set server {backend_name('sample')}/green-2 state drain")  # a server being drained stays so
    before = {s.name: (s.weight, s.status.split()[0], s.healthy) for s in lb.servers("sample")}
    failures: list[str] = []
    sent = [0]
    stop = threading.Event()

    def users() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    answer = client.get(f"http://127.0.0.1:{region.lb_port}/", headers={"Host": "sample"})
                    if answer.status_code >= 500:
                        failures.append(f"HTTP {answer.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                sent[0] += 1
                time.sleep(0.005)

    thread = threading.Thread(target=users, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        assert lb.ensure_app("newapp", "/healthz") is True
        time.sleep(1)
        assert lb.ensure_app("newapp", "/healthz") is False  # there now: nothing to do
        stop.set()
        thread.join(timeout=10)
        assert sent[0] > 100 and failures == [], (sent[0], failures[:5])
        assert backend_name("newapp") in lb.backends() and backend_name("other") in lb.backends()
        after = {s.name: (s.weight, s.status.split()[0], s.healthy) for s in lb.servers("sample")}
        assert after == before and before["green-2"][1] == "DRAIN", before
    finally:
        stop.set()
        thread.join(timeout=10)
        for name in backends:  # the module's next tests start from an empty backend
            lb.remove_server("sample", name, drain_timeout_s=1, force=True)


def test_shares_decide_where_requests_go(lb: LoadBalancer, region: Region, backends: dict[str, int]) -> None:
    add_all(lb, backends)
    assert [s.name for s in lb.servers("sample")] == ["blue-1", "green-1", "green-2"]
    assert all(s.weight == 0 and s.healthy for s in lb.servers("sample"))

    lb.set_shares("sample", {"blue": 100, "green": 0})
    assert lb.shares("sample") == {"blue": 100.0, "green": 0.0}
    assert through_lb(region) == {"blue": REQUESTS_PER_CHECK}

    lb.set_shares("sample", {"green": 100})  # colors not named get 0
    assert lb.shares("sample") == {"blue": 0.0, "green": 100.0}
    assert through_lb(region) == {"green": REQUESTS_PER_CHECK}
    per_server = {s.name: s.weight for s in lb.servers("sample")}
    assert per_server == {"blue-1": 0, "green-1": 256, "green-2": 256}  # split evenly over green's servers

    lb.set_shares("sample", {"blue": 25, "green": 75})
    assert lb.shares("sample") == pytest.approx({"blue": 25.0, "green": 75.0}, abs=0.5)
    seen = through_lb(region, count=200)
    assert 25 <= seen["blue"] <= 75 and seen["blue"] + seen["green"] == 200, seen


def test_add_server_is_idempotent(lb: LoadBalancer, backends: dict[str, int]) -> None:
    add_all(lb, backends)
    lb.set_shares("sample", {"blue": 100})
    assert lb.add_server("sample", "blue-1", "127.0.0.1", backends["blue-1"]) == "already present"
    assert lb.server("sample", "blue-1") is not None and lb.shares("sample")["blue"] == 100.0  # weight kept
    with pytest.raises(LoadBalancerError, match="already exists at"):
        lb.add_server("sample", "blue-1", "127.0.0.1", backends["green-1"])
    with pytest.raises(LoadBalancerError, match="canary"):
        lb.set_shares("sample", {"blue": 90, "canary": 10})


def test_host_header_picks_the_app(lb: LoadBalancer, region: Region, backends: dict[str, int]) -> None:
    add_all(lb, backends)
    lb.set_shares("sample", {"blue": 100})
    lb.add_server("other", "green-1", "127.0.0.1", backends["green-1"])
    lb.set_shares("other", {"green": 100})
    assert through_lb(region, host="other", count=5) == {"green": 5}
    assert through_lb(region, host="other.example:8080", count=5) == {"green": 5}
    assert through_lb(region, host="sample.eu-west.local", count=5) == {"blue": 5}
    assert through_lb(region, host="unknown", count=5) == {"blue": 5}  # default backend: the first app
    with pytest.raises(LoadBalancerError, match="carries all"):
        lb.remove_server("other", "green-1")  # the only server with traffic
    assert lb.remove_server("other", "green-1", force=True) == "removed"


def test_remove_server_is_idempotent_and_keeps_traffic_safe(
    lb: LoadBalancer, region: Region, backends: dict[str, int]
) -> None:
    add_all(lb, backends)
    lb.set_shares("sample", {"green": 100})
    assert lb.remove_server("sample", "green-2") == "removed"
    assert lb.remove_server("sample", "green-2") == "absent"
    assert [s.name for s in lb.servers("sample")] == ["blue-1", "green-1"]
    assert through_lb(region) == {"green": REQUESTS_PER_CHECK}
    memo = lb._read_state()["apps"]["sample"]
    assert sorted(memo["servers"]) == ["blue-1", "green-1"] and memo["shares"]["green"] == 100.0
    lb.add_server("sample", "green-2", "127.0.0.1", backends["green-2"])


def test_restore_rebuilds_after_a_restart(
    lb: LoadBalancer, platform: PlatformConfig, region: Region, backends: dict[str, int]
) -> None:
    add_all(lb, backends)
    lb.set_shares("sample", {"blue": 50, "green": 50})
    service = haproxy_service(platform, region, APPS, state_dir())
    service.stop()
    service.start()
    assert lb.servers("sample") == []  # dynamic servers do not survive a restart
    assert lb.restore("sample") == {"blue": 50.0, "green": 50.0}
    assert lb.shares("sample") == pytest.approx({"blue": 50.0, "green": 50.0}, abs=0.5)
    assert sum(through_lb(region, count=20).values()) == 20


def test_stats_page_and_metrics_answer(lb: LoadBalancer, region: Region, backends: dict[str, int]) -> None:
    add_all(lb, backends)
    stats = httpx.get(f"http://127.0.0.1:{region.lb_admin_port}/stats", timeout=5)
    assert stats.status_code == 200 and "app_sample" in stats.text
    metrics = httpx.get(f"http://127.0.0.1:{region.lb_admin_port}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert 'haproxy_server_weight{proxy="app_sample",server="blue-1"}' in metrics.text


def test_flips_under_traffic_lose_no_request(
    lb: LoadBalancer, platform: PlatformConfig, region: Region, backends: dict[str, int]
) -> None:
    add_all(lb, backends)
    lb.set_shares("sample", {"blue": 100})
    lb.add_server("other", "blue-1", "127.0.0.1", backends["blue-1"])
    lb.set_shares("other", {"blue": 100})
    # Only the region that runs here, a little more traffic than the default.
    local = platform.local.model_copy(update={"traffic_rps": TRAFFIC_RPS})
    one_region = platform.model_copy(update={"regions": [region], "rollout": None, "local": local})
    shutil.rmtree(state_dir() / "traffic", ignore_errors=True)
    service = traffic_service(one_region, state_dir(), list(APPS))
    service.stop()
    start = time.time()
    try:
        service.start()
        for flip in range(FLIPS):
            lb.set_shares("sample", {"green": 100} if flip % 2 == 0 else {"blue": 100})
            time.sleep(FLIP_PAUSE_S)
        lb.remove_server("sample", "green-2")  # drained while blue carries the traffic
        lb.add_server("sample", "green-2", "127.0.0.1", backends["green-2"])
        lb.set_shares("sample", {"blue": 10, "green": 90})
        time.sleep(FLIP_PAUSE_S)
    finally:
        service.stop()
    end = time.time()
    stats = read_stats(state_dir())
    sent = stats["totals"]["sent"]
    assert sent >= TRAFFIC_RPS * FLIPS * FLIP_PAUSE_S * 0.5, stats
    assert failures_between(state_dir(), start, end, region.name) == []
    assert stats["totals"]["failed"] == 0, stats
    counts = stats["regions"][region.name]
    assert sum(counts[app]["by_class"]["2xx"] for app in APPS) == sent, counts


def test_a_server_whose_last_check_timed_out_is_waited_for_not_refused(lb: LoadBalancer) -> None:
    """On a busy machine one health check can time out: the server is then "UP 1/2", neither healthy
    nor down. A flip to its color waits for the next check instead of refusing at once."""
    port, service = standin("canary-1")
    service.stop()
    before = lb.shares("other")
    try:
        service.start()
        lb.add_server("other", "canary-1", "127.0.0.1", port)
        pid = service.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # it stops answering; its next check times out
        try:
            wait_for("a failed check on an UP server", lambda: _undecided(lb.server("other", "canary-1")), 10)
        finally:
            threading.Timer(0.3, os.kill, (pid, signal.SIGCONT)).start()
        weights = lb.set_shares("other", {"canary": 100})
        assert weights["canary-1"] > 0 and sum(weights.values()) == weights["canary-1"], weights
        server = lb.server("other", "canary-1")
        assert server is not None and server.healthy, server
    finally:
        if sum(before.values()) > 0:
            lb.set_shares("other", before)
        lb.remove_server("other", "canary-1", force=True)
        service.stop()


def _undecided(server: ServerState | None) -> bool:
    return server is not None and server.up and not server.healthy


@pytest.fixture
def prometheus(platform: PlatformConfig) -> Iterator[PrometheusClient]:
    require("Prometheus", shutil.which("prometheus") is not None, "Debian: `apt-get install prometheus` (2.42+)")
    shutil.rmtree(state_dir() / "prometheus", ignore_errors=True)
    service = prometheus_service(platform, state_dir())
    service.stop()
    try:
        service.start()
        yield PrometheusClient(f"http://127.0.0.1:{platform.local.prometheus_port}")
    finally:
        service.stop()


def test_prometheus_scrapes_discovered_targets(
    prometheus: PrometheusClient, platform: PlatformConfig, region: Region, backends: dict[str, int]
) -> None:
    write_targets(state_dir(), "sample", region.name, "blue", [("127.0.0.1", backends["blue-1"])], {"version": "1.2.3"})
    up = f'sum(up{{job="apps",app="sample",region="{region.name}",color="blue",version="1.2.3"}})'
    wait_for(f"{up} == 1", lambda: prometheus.query(up) == 1.0)
    time.sleep(2.5)  # a few more scrapes for the range
    now = time.time()
    samples = prometheus.query_range(up, now - 10, now, 1.0)
    assert len(samples) >= 2 and all(v == 1.0 for _, v in samples), samples
    assert prometheus.query_range('up{job="nothing-like-this"}', now - 10, now, 1.0) == []
    assert prometheus.query('sum(standin_requests_total{app="sample"})') is not None
    with pytest.raises(PrometheusError, match="aggregate"):
        prometheus.query('up{job="haproxy"}')  # one series per region
    with pytest.raises(PrometheusError, match="sum by"):
        prometheus.query("sum by (")
    client = AsyncPrometheusClient(prometheus.base_url)
    assert asyncio.run(client.query(up)) == 1.0
    assert len(asyncio.run(client.query_range(up, now - 10, now, 1.0))) >= 2

    async def shared() -> list[float | None]:
        # A trigger run's queries share one connection pool (PrometheusMetricsClient's).
        async with httpx.AsyncClient() as http:
            pooled = AsyncPrometheusClient(prometheus.base_url, client=http)
            return [await pooled.query(up), await pooled.query(up)]

    assert asyncio.run(shared()) == [1.0, 1.0]

    remove_targets(state_dir(), "sample", region.name, "blue")
    remove_targets(state_dir(), "sample", region.name, "blue")  # idempotent
    wait_for(f"{up} has no data", lambda: prometheus.query(up) is None)
