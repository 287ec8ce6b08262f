"""`python -m immutable.local.traffic`: steady requests standing for real users, and what failed.

For every region and app it sends GET / with `Host: <app>` to the region's load balancer on
127.0.0.1, `platform.local.traffic_rps` requests per second per app and region, spread evenly over
time (each app's users are as many however many apps there are: its canary's statistics do not
weaken when an app is added). Without `--app` the apps are every app spec, looked for again every few
seconds (an app added to a running platform gets users too). An app has users in a region once
it has been released there (the load balancer's memo gives it a share): before that nobody
would send it a request. A request fails when it answers >= 500 or does not answer (connection error,
timeout). Every failure is one JSON line in state_dir/traffic/failures.jsonl; counters are
rewritten atomically every second in state_dir/traffic/stats.json. A release that loses no
request leaves no line for its time window; `failures_between` is how the pipeline and the
tests check that. Runs until SIGTERM or SIGINT, then finishes the requests in flight and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

from immutable.config import PlatformConfig, Region, load_platform
from immutable.local.haproxy_names import _state_file
from immutable.local.loadbalancer import write_atomically
from immutable.local.services import Service

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"  # the only host this generator ever sends to
REQUEST_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 1.0
KEEPALIVE_EXPIRY_S = 2.0  # well under HAProxy's `timeout http-keep-alive` (10s), so no reuse races
STATS_INTERVAL_S = 1.0
MAX_IN_FLIGHT = 200  # per region and app; beyond it sending waits (a stuck LB shows as timeouts)
READY_TIMEOUT_S = 20.0
FAILURE_LOG_INTERVAL_S = 1.0  # at most one log line per interval about failures (all go to the file)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
APP_SCAN_S = 2.0  # how often the apps (and where each is released) are looked for again


def traffic_dir(state_dir: Path) -> Path:
    return state_dir / "traffic"


def stats_file(state_dir: Path) -> Path:
    return traffic_dir(state_dir) / "stats.json"


def failures_file(state_dir: Path) -> Path:
    return traffic_dir(state_dir) / "failures.jsonl"


class TrafficGenerator:
    """Sends the traffic and keeps the counters; one asyncio loop, one task per request."""

    def __init__(self, platform: PlatformConfig, state_dir: Path, apps: Sequence[str] | None = None) -> None:
        self.fixed_apps = list(apps) if apps else None  # None: every app spec, looked for again and again
        self.platform = platform
        self.state_dir = state_dir
        self.apps: list[str] = []
        self.rps = platform.local.traffic_rps
        self.started = time.time()
        self.counters: dict[str, dict[str, dict[str, Any]]] = {r.name: {} for r in platform.regions}
        self.released: set[tuple[str, str]] = set()  # (region, app) with a share on the load balancer
        self.in_flight: set[asyncio.Task[None]] = set()
        self._failures: IO[str] | None = None
        self._logged_at = -FAILURE_LOG_INTERVAL_S
        self._unlogged = 0
        self.scan()
        if not self.apps:
            raise ValueError("the traffic generator needs at least one app to send requests to")

    def scan(self) -> list[str]:
        """Add the apps that appeared; note where each is released. Returns the new apps."""
        wanted = self.fixed_apps if self.fixed_apps is not None else _default_apps()
        new = [app for app in wanted if app not in self.apps]
        for app in new:
            self.apps.append(app)
            for counters in self.counters.values():
                counters[app] = {"sent": 0, "failed": 0, "by_class": dict.fromkeys(STATUS_CLASSES, 0)}
        self.released = {
            (region.name, app) for region in self.platform.regions for app in released_apps(self.state_dir, region)
        }
        return new

    async def run(self, stop: asyncio.Event) -> None:
        traffic_dir(self.state_dir).mkdir(parents=True, exist_ok=True)
        # aiohttp, not httpx: about a third of the CPU per request (0.9 against 2.8 ms, measured side by
        # side on a 2-core machine), and this process sends every request of every app and region.
        connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=KEEPALIVE_EXPIRY_S)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
        with open(failures_file(self.state_dir), "a") as self._failures:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as client:
                self.write_stats()

                def senders_for(apps: list[str]) -> list[asyncio.Task[None]]:
                    return [
                        asyncio.create_task(self._send_steadily(client, region, app, self.apps.index(app), stop))
                        for region in self.platform.regions
                        for app in apps
                    ]

                senders = senders_for(self.apps)
                writer = asyncio.create_task(self._write_stats_every_second(stop))
                log.info(
                    "traffic: %s rps per app and region to %s, apps %s",
                    self.rps,
                    [f"{r.name}@{LOOPBACK}:{r.lb_port}" for r in self.platform.regions],
                    self.apps,
                )
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), APP_SCAN_S)
                    if not stop.is_set() and (new := self.scan()):
                        log.info("traffic: new app(s) %s; users once each is released", new)
                        senders += senders_for(new)
                for task in senders:
                    task.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
                if self.in_flight:  # each is bounded by REQUEST_TIMEOUT_S
                    await asyncio.wait(self.in_flight, timeout=REQUEST_TIMEOUT_S + 1)
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        self._failures = None
        self.write_stats()
        log.info("traffic: stopped; %s", self.totals())

    async def _send_steadily(
        self, client: aiohttp.ClientSession, region: Region, app: str, index: int, stop: asyncio.Event
    ) -> None:
        """rps for this app, offset by its index so the region's requests are evenly spaced; none
        before the app is released in the region."""
        limit = asyncio.Semaphore(MAX_IN_FLIGHT)
        loop = asyncio.get_running_loop()
        interval_s = 1 / self.rps
        next_at = loop.time() + (index % len(self.apps)) / (self.rps * len(self.apps))
        while not stop.is_set():
            delay_s = next_at - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            elif delay_s < -interval_s:
                next_at = loop.time()  # fell behind (a busy machine): do not burst to catch up
            next_at += interval_s
            if (region.name, app) not in self.released:
                continue
            await limit.acquire()
            task = asyncio.create_task(self._one(client, region, app))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            task.add_done_callback(lambda _: limit.release())

    async def _one(self, client: aiohttp.ClientSession, region: Region, app: str) -> None:
        counter = self.counters[region.name][app]
        counter["sent"] += 1
        sent_at = time.time()
        status: int | None = None
        error: str | None = None
        try:
            async with client.get(f"http://{LOOPBACK}:{region.lb_port}/", headers={"Host": app}) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = describe_error(exc)
        kind = "error" if status is None else f"{status // 100}xx"
        counter["by_class"][kind] = counter["by_class"].get(kind, 0) + 1
        if status is None or status >= 500:
            counter["failed"] += 1
            self._record_failure(
                {
                    "time": sent_at,
                    "region": region.name,
                    "app": app,
                    "status": status,
                    "error": error,
                    "elapsed_s": round(time.time() - sent_at, 4),
                }
            )

    def _record_failure(self, failure: dict[str, Any]) -> None:
        self._unlogged += 1
        if time.monotonic() - self._logged_at >= FAILURE_LOG_INTERVAL_S:  # a down region must not flood the log
            log.warning("traffic: %s failed requests since the last message; latest: %s", self._unlogged, failure)
            self._logged_at, self._unlogged = time.monotonic(), 0
        if self._failures is not None:
            self._failures.write(json.dumps(failure) + "\n")
            self._failures.flush()

    async def _write_stats_every_second(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(STATS_INTERVAL_S)
            self.write_stats()

    def totals(self) -> dict[str, int]:
        cells = [c for apps in self.counters.values() for c in apps.values()]
        return {"sent": sum(c["sent"] for c in cells), "failed": sum(c["failed"] for c in cells)}

    def write_stats(self) -> None:
        stats = {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "rps_per_app_and_region": self.rps,
            "apps": self.apps,
            "totals": self.totals(),
            "regions": self.counters,
        }
        write_atomically(stats_file(self.state_dir), json.dumps(stats, indent=2) + "\n")


# --- helpers for the pipeline and the tests ---------------------------------------------------


def describe_error(exc: BaseException) -> str:
    """The error and what caused it, outermost first: a client's read error alone says nothing of whether
    the peer reset the connection or closed it, which is what tells a load balancer's fault apart."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}" if str(current) else type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def released_apps(state_dir: Path, region: Region) -> set[str]:
    """The apps the region's load balancer gives a share to (its memo, written at every change)."""
    try:
        memo = json.loads(_state_file(state_dir, region).read_text())
    except (OSError, ValueError):
        return set()
    apps = memo.get("apps", {}) if isinstance(memo, dict) else {}
    return {app for app, entry in apps.items() if sum((entry.get("shares") or {}).values()) > 0}


def read_stats(state_dir: Path) -> dict[str, Any]:
    """The last counters written; {} when the generator never ran."""
    try:
        data = json.loads(stats_file(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def failures_between(state_dir: Path, start: float, end: float, region: str | None = None) -> list[dict[str, Any]]:
    """Failed requests sent in [start, end] (epoch seconds), optionally of one region."""
    found = []
    try:
        with open(failures_file(state_dir)) as lines:
            for line in lines:
                try:
                    failure = json.loads(line)
                except ValueError:
                    continue  # a line being written right now
                if start <= failure.get("time", -1) <= end and region in (None, failure.get("region")):
                    found.append(failure)
    except FileNotFoundError:
        return []
    return found


def _ready(state_dir: Path, service: Service) -> bool:
    """Ready once this very process has written its first stats."""
    pid = service.pid()
    return pid is not None and read_stats(state_dir).get("pid") == pid


def traffic_service(platform: PlatformConfig, state_dir: Path, apps: Sequence[str] | None = None) -> Service:
    """The generator as a background service, sending to this exact platform (written beside its stats);
    `apps` None: every app spec, looked for again as specs are added."""
    from immutable.paths import PROJECT_ROOT

    traffic_dir(state_dir).mkdir(parents=True, exist_ok=True)
    platform_file = traffic_dir(state_dir) / "platform.json"
    write_atomically(platform_file, platform.model_dump_json(by_alias=True, indent=2) + "\n")
    plugins = str(PROJECT_ROOT / "plugins")
    python_path = os.pathsep.join(p for p in (plugins, os.environ.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "immutable.local.traffic", "--platform-file", str(platform_file)]
    argv += ["--state-dir", str(state_dir), *[arg for app in apps or () for arg in ("--app", app)]]
    service = Service(
        name="traffic",
        argv=argv,
        run_dir=state_dir / "run",
        ready=lambda: False,
        env={"PYTHONPATH": python_path},
        ready_timeout_s=READY_TIMEOUT_S,
    )
    service.ready = lambda: _ready(state_dir, service)
    return service


# --- command line -----------------------------------------------------------------------------


def _default_apps() -> list[str]:
    from immutable.app_spec import load_app_specs

    specs, _ = load_app_specs()
    return sorted(specs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="immutable.local.traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform-file", type=Path, help="default: $IMMUTABLE_PLATFORM_FILE or include/platform.yaml")
    parser.add_argument("--state-dir", type=Path, help="default: $IMMUTABLE_STATE_DIR or the platform's state_dir")
    parser.add_argument("--app", action="append", dest="apps", help="repeatable; default: every app spec")
    parser.add_argument("--duration-s", type=float, help="stop after this many seconds (default: until SIGTERM)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from immutable.config import state_dir as default_state_dir

    platform = load_platform(args.platform_file)
    generator = TrafficGenerator(platform, args.state_dir or default_state_dir(), args.apps)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.duration_s is not None:
            loop.call_later(args.duration_s, stop.set)
        await generator.run(stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
