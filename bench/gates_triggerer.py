"""Many gates, one triggerer: GATES canary-analysis triggers at once in one process's event loop,
as Airflow's triggerer runs them, against a real Prometheus on loopback, for a few intervals.

Prometheus scrapes a canary and a baseline per gate (served by this script: the sample app's
request counter and latency histogram, 20 requests per second each; one gate in five has a canary
failing 30% of its requests). The triggers run in a child process, so its CPU time is theirs alone.
Prints the triggerer's CPU share of one core, the latency of its Prometheus queries and how late
each verdict came after its due time (the end of the interval that decided it), against the goals:
at most 10% of one core at a 5 s step, every verdict within one step of its due time."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_images import QUICK, say_if_quick

ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = ROOT / "var" / "bench-gates"  # removed at the end
REGION = "eu-west"
GATES = 50
BAD_EVERY = 5  # every fifth gate's canary fails 30% of its requests
STEP_S = 5.0
INTERVAL_S = 30.0 if QUICK else 60.0
INTERVALS = 2 if QUICK else 3
RATE_WINDOW = "15s"
RPS = 20.0  # requests per second each canary and baseline "serves"
PROMETHEUS_PORT = 6330
CPU_GOAL = 0.10  # of one core
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def gate_app(number: int) -> str:
    return f"gate-{number:02d}"


class FakeFleet:
    """What Prometheus scrapes per app and color: counters that grow as a served fleet's would."""

    def __init__(self, error_rate: float, extra_latency_s: float) -> None:
        self.error_rate = error_rate
        self.extra_latency_s = extra_latency_s
        self.ok = self.errors = 0
        self.buckets = [0] * len(LATENCY_BUCKETS_S)
        self.count = 0
        self.total_s = 0.0
        self.last = time.time()
        self.lock = threading.Lock()

    def render(self) -> str:
        with self.lock:
            now = time.time()
            served = max(0, round(random.gauss(RPS * (now - self.last), (RPS * (now - self.last)) ** 0.5)))
            self.last = now
            for _ in range(served):
                if random.random() < self.error_rate:
                    self.errors += 1
                else:
                    self.ok += 1
                latency = random.lognormvariate(-4.8, 0.3) + self.extra_latency_s  # about 8 ms
                for i, bound in enumerate(LATENCY_BUCKETS_S):
                    if latency <= bound:
                        self.buckets[i] += 1
                self.count += 1
                self.total_s += latency
            lines = [
                f'sample_requests_total{{path="/",code="200"}} {self.ok}',
                f'sample_requests_total{{path="/",code="500"}} {self.errors}',
            ]
            lines += [
                f'sample_request_duration_seconds_bucket{{le="{b}"}} {n}'
                for b, n in zip(LATENCY_BUCKETS_S, self.buckets, strict=True)
            ]
            lines += [
                f'sample_request_duration_seconds_bucket{{le="+Inf"}} {self.count}',
                f"sample_request_duration_seconds_sum {self.total_s:.6f}",
                f"sample_request_duration_seconds_count {self.count}",
            ]
            return "\n".join(lines) + "\n"


def exporter(fleets: dict[str, FakeFleet]) -> ThreadingHTTPServer:
    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fleet = fleets.get(self.path)
            body = (fleet.render() if fleet else "bench_up 1\n").encode()  # "/metrics": the region's LB
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_targets(port: int) -> dict[str, FakeFleet]:
    """One file-discovered target per gate and color, each its own path on the exporter."""
    from immutable.local.prometheus import targets_dir

    fleets: dict[str, FakeFleet] = {}
    groups = []
    for number in range(GATES):
        bad = number % BAD_EVERY == 0
        for color in ("canary", "baseline"):
            path = f"/metrics/{gate_app(number)}/{color}"
            failing = bad and color == "canary"
            fleets[path] = FakeFleet(0.3 if failing else 0.0, 0.04 if failing else 0.0)
            labels = {"app": gate_app(number), "region": REGION, "color": color, "__metrics_path__": path}
            groups.append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
    targets_dir(STATE_DIR).mkdir(parents=True, exist_ok=True)
    (targets_dir(STATE_DIR) / "gates.json").write_text(json.dumps(groups))
    return fleets


def platform(exporter_port: int) -> Any:
    from immutable.config import PlatformConfig

    return PlatformConfig.model_validate(
        {
            "platform": "local",
            "local": {"instance": "benchgates", "build_registry_port": 6331, "prometheus_port": PROMETHEUS_PORT},
            # The region's "load balancer" exporter is ours: the gates' traffic-gap check reads its `up`.
            "regions": [{"name": REGION, "registry_port": 6332, "lb_port": 6333, "lb_admin_port": exporter_port}],
        }
    )


def gate_settings() -> dict[str, Any]:
    """The sample app's canary metrics and judge, at this benchmark's step and intervals."""
    from immutable.app_spec import app_spec

    settings = app_spec("sample").canary.model_copy(
        update={
            "interval_s": INTERVAL_S,
            "lifetime_s": INTERVAL_S * INTERVALS,
            "step_s": STEP_S,
            "rate_window": RATE_WINDOW,
            "min_samples": int(INTERVAL_S // STEP_S) - 1,
        }
    )
    return {"metrics": [m.model_dump() for m in settings.metrics], "analysis": settings.judge_settings()}


# --- the child: one event loop, every gate -------------------------------------------------------


def triggerer(config: dict[str, Any]) -> None:
    """Runs in the child process: every gate's trigger in one loop; prints one JSON line."""
    from immutable.local.metrics import PrometheusMetricsClient
    from immutable.triggers import CanaryAnalysisTrigger

    latencies: list[float] = []
    series = PrometheusMetricsClient.series

    async def timed(self: Any, query: Any, start: float, end: float, step_s: float) -> list[float]:
        began = time.perf_counter()
        try:
            return await series(self, query, start, end, step_s)
        finally:
            latencies.append(time.perf_counter() - began)

    PrometheusMetricsClient.series = timed  # type: ignore[method-assign]  # measuring, not changing

    async def one(number: int) -> dict[str, Any]:
        trigger = CanaryAnalysisTrigger(
            backend={"kind": "prometheus", "url": config["url"], "region": REGION},
            metrics=config["metrics"],
            analysis=config["analysis"],
            labels={"app": gate_app(number), "region": REGION},
            start_at=config["start_at"],
            interval_s=INTERVAL_S,
            intervals=INTERVALS,
            step_s=STEP_S,
            rate_window=RATE_WINDOW,
        )
        async for event in trigger.run():
            return {"gate": number, "at": time.time(), **event.payload}
        return {"gate": number, "at": time.time(), "status": "none"}

    judging_from: list[float] = []  # CPU seconds when the first window starts: the wait before is idle

    async def mark_start() -> None:
        await asyncio.sleep(max(0.0, config["start_at"] - time.time()))
        judging_from.append(time.process_time())

    async def every_gate() -> list[dict[str, Any]]:
        marked = asyncio.create_task(mark_start())
        found = await asyncio.gather(*(one(n) for n in range(GATES)))
        await marked
        return found

    verdicts = asyncio.run(every_gate())
    cpu_s, wall_s = time.process_time() - judging_from[0], time.time() - config["start_at"]
    print(json.dumps({"verdicts": verdicts, "latencies": latencies, "cpu_s": cpu_s, "wall_s": wall_s}))


# --- the parent ----------------------------------------------------------------------------------


def main() -> None:
    from immutable.local.prometheus import prometheus_service

    shutil.rmtree(STATE_DIR, ignore_errors=True)
    fleets: dict[str, FakeFleet] = {}
    server = exporter(fleets)
    fleets.update(write_targets(server.server_address[1]))
    service = prometheus_service(platform(server.server_address[1]), STATE_DIR)
    print(
        f"many gates, one triggerer: {GATES} canary gates ({GATES // BAD_EVERY} with a failing canary), "
        f"{INTERVALS} interval(s) of {INTERVAL_S:.0f}s at a {STEP_S:.0f}s step, against Prometheus; "
        f"{os.cpu_count()} CPUs"
    )
    say_if_quick()
    try:
        service.start()
        start_at = time.time() + 20  # a rate window of scrapes first
        config = {"url": f"http://127.0.0.1:{PROMETHEUS_PORT}", "start_at": start_at, **gate_settings()}
        child = subprocess.run(
            [sys.executable, __file__, "--triggerer"],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=INTERVAL_S * INTERVALS + 300,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(f"the triggerer process failed:\n{child.stderr[-3000:]}")
        report(json.loads(child.stdout.strip().splitlines()[-1]), start_at)
    finally:
        service.stop()
        server.shutdown()
        shutil.rmtree(STATE_DIR, ignore_errors=True)


def report(found: dict[str, Any], start_at: float) -> None:
    verdicts, latencies = found["verdicts"], sorted(found["latencies"])
    late = []
    for verdict in verdicts:
        judged = len(verdict.get("intervals", []))
        late.append(verdict["at"] - (start_at + judged * INTERVAL_S))
    expected = sum(1 for v in verdicts if v["status"] == ("fail" if v["gate"] % BAD_EVERY == 0 else "pass"))
    share = found["cpu_s"] / found["wall_s"]
    on_time = sum(1 for s in late if s <= STEP_S)
    print(f"  {'triggerer CPU share of one core':<44} {share:6.1%}   (goal <= {CPU_GOAL:.0%})")
    print(f"  {'  CPU seconds / wall seconds, while judging':<44} {found['cpu_s']:6.1f} / {found['wall_s']:.0f}")
    print(
        f"  {'Prometheus query latency, median / p95 / max':<44} "
        f"{statistics.median(latencies) * 1000:6.1f} / {latencies[int(len(latencies) * 0.95)] * 1000:.1f} / "
        f"{latencies[-1] * 1000:.1f} ms over {len(latencies)} queries"
    )
    print(
        f"  {'verdicts within one step of their due time':<44} {on_time:6d} / {len(verdicts)}   "
        f"(latest {max(late):+.2f}s; goal: all within {STEP_S:.0f}s)"
    )
    print(f"  {'verdicts as the fleets deserve (pass / fail)':<44} {expected:6d} / {len(verdicts)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--triggerer"]:
        triggerer(json.loads(sys.stdin.read()))
    else:
        main()
