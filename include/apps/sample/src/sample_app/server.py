"""The sample service. Standard library only, so the wheel has no dependencies to fetch.

Fault knobs (from faults.json for this version, overridden by environment variables):
  SAMPLE_ERROR_RATE        share of requests to / answered with HTTP 500 (0.0 to 1.0)
  SAMPLE_EXTRA_LATENCY_MS  milliseconds added to every request to /
  SAMPLE_FAIL_HEALTH       "1" makes /healthz answer 503
  SAMPLE_FAULT_AFTER_S     faults start this many seconds after the first request to / (a regression
                           that appears after some real traffic, however late the traffic starts)
A JSON file at SAMPLE_FAULTS_FILE (default /tmp/sample-faults.json) with the same keys as
faults.json's entries overrides them while it exists: a fault injected into a running server.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata, resources
from typing import Any

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # seconds
FAULTS_FILE_CHECK_S = 1.0  # how often the injected-faults file is looked at


def app_version() -> str:
    """The release's version as the pipeline named it (APP_VERSION, set by the bake), else the wheel's."""
    return os.environ.get("APP_VERSION") or metadata.version("sample-app")


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    extra_latency_ms: float = 0.0
    fail_health: bool = False
    after_s: float = 0.0

    @classmethod
    def load(cls, version: str, injected: dict[str, object] | None = None) -> Faults:
        table = json.loads(resources.files("sample_app").joinpath("faults.json").read_text())
        knobs = table.get(version, {}) | (injected or {})
        env = {} if injected else os.environ
        return cls(
            error_rate=float(env.get("SAMPLE_ERROR_RATE", knobs.get("error_rate", 0.0))),
            extra_latency_ms=float(env.get("SAMPLE_EXTRA_LATENCY_MS", knobs.get("extra_latency_ms", 0.0))),
            fail_health=env.get("SAMPLE_FAIL_HEALTH", str(int(knobs.get("fail_health", False)))) == "1",
            after_s=float(env.get("SAMPLE_FAULT_AFTER_S", knobs.get("after_s", 0.0))),
        )


class Metrics:
    """Prometheus text-format counters and a latency histogram, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.buckets = [0] * len(LATENCY_BUCKETS_S)
        self.count = 0
        self.total_s = 0.0

    def observe(self, path: str, status: int, elapsed_s: float) -> None:
        with self._lock:
            key = (path, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            if path != "/":
                return  # the latency histogram is about users' requests, not health checks and scrapes
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if elapsed_s <= bound:
                    self.buckets[i] += 1
            self.count += 1
            self.total_s += elapsed_s

    def render(self, version: str) -> str:
        with self._lock:
            lines = [
                "# HELP sample_build_info The running version.",
                "# TYPE sample_build_info gauge",
                f'sample_build_info{{version="{version}"}} 1',
                "# HELP sample_requests_total Requests served, by path and status code.",
                "# TYPE sample_requests_total counter",
            ]
            for (path, status), n in sorted(self.requests.items()):
                lines.append(f'sample_requests_total{{path="{path}",code="{status}"}} {n}')
            lines += [
                "# HELP sample_request_duration_seconds Latency of requests to /.",
                "# TYPE sample_request_duration_seconds histogram",
            ]
            for bound, n in zip(LATENCY_BUCKETS_S, self.buckets, strict=True):
                lines.append(f'sample_request_duration_seconds_bucket{{le="{bound}"}} {n}')
            lines.append(f'sample_request_duration_seconds_bucket{{le="+Inf"}} {self.count}')
            lines.append(f"sample_request_duration_seconds_sum {self.total_s:.6f}")
            lines.append(f"sample_request_duration_seconds_count {self.count}")
            return "\n".join(lines) + "\n"


class FaultSource:
    """The version's faults, replaced by the injected-faults file while that file exists."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.path = os.environ.get("SAMPLE_FAULTS_FILE", "/tmp/sample-faults.json")
        self.current = Faults.load(version)
        self.checked = 0.0
        self.lock = threading.Lock()

    def get(self) -> Faults:
        now = time.monotonic()
        with self.lock:
            if now - self.checked >= FAULTS_FILE_CHECK_S:
                self.checked = now
                try:
                    with open(self.path) as injected:
                        self.current = Faults.load(self.version, json.load(injected))
                except (OSError, ValueError):
                    self.current = Faults.load(self.version)
            return self.current


class TrafficClock:
    """Seconds since the first request to / : the clock of the late faults. Counting from the
    server's start instead made a late regression depend on how fast the pipeline got to its tests
    (on a busy machine, staging's test began more than 15 s after its container, and the version
    meant to pass staging and fail its canary failed staging)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.lock = threading.Lock()

    def seconds(self, *, start: bool) -> float:
        """Since the first request to /; `start` (a request to / now) starts the clock if it has not."""
        now = time.monotonic()
        with self.lock:
            if self.first is None and start:
                self.first = now
            return 0.0 if self.first is None else now - self.first


def make_handler(
    version: str, source: FaultSource, metrics: Metrics, clock: TrafficClock
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            begin = time.monotonic()
            faults = source.get()
            path = self.path.split("?", 1)[0]
            faulty = clock.seconds(start=path == "/") >= faults.after_s
            if path == "/healthz":
                failing = faulty and faults.fail_health
                status, body = (503, "unhealthy\n") if failing else (200, "ok\n")
            elif path == "/version":
                status, body = 200, json.dumps({"version": version}) + "\n"
            elif path == "/metrics":
                self._send(200, metrics.render(version), "text/plain; version=0.0.4")
                return
            elif path == "/":
                if faulty and faults.extra_latency_ms:
                    time.sleep(faults.extra_latency_ms / 1000)
                if faulty and random.random() < faults.error_rate:
                    status, body = 500, "injected failure\n"
                else:
                    status, body = 200, f"hello from sample-app {version}\n"
            else:
                status, body = 404, "not found\n"
            self._send(status, body, "text/plain")
            metrics.observe(path if status != 404 else "other", status, time.monotonic() - begin)

        def _send(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # request logs would drown the container's output; /metrics has the counts

    return Handler


class Server(ThreadingHTTPServer):
    """A client that hangs up is not an error worth a traceback: a load balancer's health check closes
    its connection with a reset, once a second per server, and those tracebacks were nearly all of a
    fleet's log (and of the engine's CPU spent logging). Any other error is still printed."""

    daemon_threads = True
    HANG_UPS = (ConnectionResetError, BrokenPipeError)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], self.HANG_UPS):
            return
        super().handle_error(request, client_address)


def main() -> None:
    version = app_version()
    source = FaultSource(version)
    port = int(os.environ.get("PORT", "8000"))
    server = Server(("0.0.0.0", port), make_handler(version, source, Metrics(), TrafficClock()))
    print(f"sample-app {version} listening on :{port} with faults {source.get()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
