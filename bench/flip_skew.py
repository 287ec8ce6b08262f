"""Synchronized flip skew: the seconds between the first and the last region reaching 100% on the new
color, for 1, 3 and 5 regions, flipped in lockstep (`pipelines.production.run_in_lockstep`, what the
release's `all_regions.flip_all` task runs) and, side by side, one region after the other.

Prints figures; asserts nothing. Goal: under 1 s at 5 regions. Each region is a real HAProxy under
the process manager, driven through its runtime API like a release drives it, with two colors of
one server each (a small HTTP server in this process answering every health check). The weight
steps are the sample app's; the pause between steps is 0, as it does not change the skew.
Its own ports (6200-6299, runtime API 7250-7259) and state (var/bench-skew, removed at the end).

Run: `PYTHONPATH=plugins .venv/bin/python bench/flip_skew.py`
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ["IMMUTABLE_STATE_DIR"] = str(Path(__file__).resolve().parents[1] / "var" / "bench-skew")

from bench_images import repetitions, say_if_quick

from immutable.config import PlatformConfig
from immutable.local.loadbalancer import LoadBalancer, haproxy_service
from immutable.pipelines.production import run_in_lockstep
from immutable.rollout import flip_steps, lockstep_rounds

STATE_DIR = Path(os.environ["IMMUTABLE_STATE_DIR"])  # removed at the end
APP = "bench"
REGION_COUNTS = (1, 3, 5)
WEIGHT_STEPS = [25.0, 50.0, 100.0]
FLIPS = repetitions(10, 3)  # flips per figure, alternating blue -> green and back


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        return None


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, *_: object) -> None:
        return None  # HAProxy's health checks reset their connections; that is not news


def platform(regions: int) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {
            "platform": "local",
            "local": {"instance": "benchskew", "build_registry_port": 6200, "prometheus_port": 6201},
            "regions": [
                {"name": f"r{n}", "registry_port": 6210 + n, "lb_port": 6220 + n, "lb_admin_port": 6250 + n}
                for n in range(regions)
            ],
            "rollout": {"waves": [["r0"], [f"r{n}" for n in range(1, regions)]], "synchronized": True},
        }
    )


def skews(balancers: dict[str, LoadBalancer], *, lockstep: bool) -> list[float]:
    found = []
    for flip in range(FLIPS):
        old, new = ("blue", "green") if flip % 2 == 0 else ("green", "blue")
        steps = {region: flip_steps(new, old, WEIGHT_STEPS) for region in balancers}

        def apply(region: str, shares: dict[str, float]) -> None:
            balancers[region].set_shares(APP, shares)

        if lockstep:
            reached = run_in_lockstep(lockstep_rounds(steps), apply, pause_s=0.0)
        else:
            reached = {}
            for region, region_steps in steps.items():
                for shares in region_steps:
                    apply(region, shares)
                reached[region] = time.time()
        found.append(max(reached.values()) - min(reached.values()))
    return found


def main() -> None:
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    servers = {color: QuietServer(("127.0.0.1", 0), Healthy) for color in ("blue", "green")}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    largest = platform(max(REGION_COUNTS))
    services = [haproxy_service(largest, region, {APP: "/"}, STATE_DIR) for region in largest.regions]
    print(f"synchronized flip skew: steps {WEIGHT_STEPS}, {FLIPS} flips per figure, median (max) in ms")
    say_if_quick()
    try:
        for service in services:
            service.start()
        balancers = {region.name: LoadBalancer(region, STATE_DIR) for region in largest.regions}
        for lb in balancers.values():
            for color, server in servers.items():
                lb.add_server(APP, f"{color}-1", "127.0.0.1", server.server_address[1])
            lb.set_shares(APP, {"blue": 100.0})
        print(f"  {'regions':>7}  {'lockstep':>18}  {'one after another':>18}")
        for count in REGION_COUNTS:
            some = dict(list(balancers.items())[:count])
            row = []
            for lockstep in (True, False):
                found = skews(some, lockstep=lockstep)
                row.append(f"{statistics.median(found) * 1000:8.1f} ({max(found) * 1000:7.1f})")
            print(f"  {count:>7}  {row[0]:>18}  {row[1]:>18}")
    finally:
        for service in services:
            service.stop()
        for server in servers.values():
            server.shutdown()
        shutil.rmtree(STATE_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
