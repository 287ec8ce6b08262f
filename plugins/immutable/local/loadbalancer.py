"""One real HAProxy per region: the local platform's load balancer, driven through its runtime API.

Each region's HAProxy listens on 127.0.0.1 only:

- `region.lb_port`: users' traffic, routed by the Host header (`<app>` or `<app>.<anything>`) to the
  backend `app_<app>`;
- `region.lb_admin_port`: the stats page at /stats and the Prometheus exporter at /metrics;
- `runtime_api_port(region)` = `region.lb_admin_port + RUNTIME_API_PORT_OFFSET` (1000): the runtime
  API (`stats socket ... level admin`), over TCP so no unix socket permissions get in the way.

The configuration holds no servers. Releases add servers named `<color>-<n>` (blue-1, green-2,
canary-1, ...) at runtime and move traffic by changing their weights, never by reloading.

How a flip loses no request (see `LoadBalancer.set_shares`):

- `balance roundrobin` is a dynamic algorithm: a weight change applies to the next request picked,
  in-flight requests finish on the server they are on, and no process is reloaded;
- weights are raised before others are lowered, so at every instant some UP server has a weight;
- a server losing its traffic stays UP and health-checked at weight 0 until it has no session left
  (`remove_server` waits for that before it puts it in maintenance and deletes it);
- `retries 3` with `option redispatch 1` send a request whose connection failed (a container that
  died between two health checks) to another server instead of answering 503.

Weights live in HAProxy; the runtime state is lost when it restarts. A small JSON file per region
(`state.json`) records the servers and the last shares per app so `restore()` can rebuild them after
a restart; it is a memo, not the source of truth.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import io
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from immutable.config import PlatformConfig, Region
from immutable.local.services import Service

log = logging.getLogger(__name__)

RUNTIME_API_PORT_OFFSET = 1000  # runtime API port = lb_admin_port + this
RUNTIME_API_TIMEOUT_S = 5.0  # one command's connect + answer
MAX_WEIGHT = 256  # HAProxy's largest server weight
DEFAULT_HEALTH_PATH = "/healthz"
HEALTH_WAIT_S = 15.0  # how long add_server waits for the first passing health check
DRAIN_TIMEOUT_S = 30.0  # how long remove_server waits for in-flight requests on a drained server
DELETE_TIMEOUT_S = 10.0  # how long remove_server retries `del server` while connections close
POLL_INTERVAL_S = 0.2
CHECK_INTERVAL_MS = 1000  # health check interval of every server added at runtime
CHECK_RISE = 1  # passing checks before a DOWN server is UP again
CHECK_FALL = 2  # failing checks before an UP server is DOWN
SHARES_TOLERANCE_PCT = 0.01  # shares must sum to 100 within this
READY_TIMEOUT_S = 20.0

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")  # apps and colors
SERVER_PATTERN = re.compile(r"^(?P<color>[a-z][a-z0-9-]{0,30})-(?P<n>[0-9]{1,4})$")
HEALTH_PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._~/%?&=+-]*$")
PASSING_CHECKS = ("L7OK", "L7OKC")


class LoadBalancerError(RuntimeError):
    """A runtime API command failed or the load balancer is not in the state an operation needs."""


@dataclass(frozen=True)
class ServerState:
    """One server of an app's backend, as HAProxy reports it (`show stat`)."""

    name: str
    address: str
    port: int
    weight: int  # the weight last set (0..256)
    status: str  # HAProxy's words: UP, DOWN, MAINT, DRAIN, NOLB, "UP 1/2" (failing, not yet down)...
    check: str  # last health check result: L7OK, L7STS (wrong status), L4CON (refused), INI...
    sessions: int  # requests in flight

    @property
    def color(self) -> str:
        return server_color(self.name)

    @property
    def up(self) -> bool:
        """Takes new requests when its weight is > 0 (also true while a failing check is not yet final)."""
        return self.status.startswith("UP")

    @property
    def healthy(self) -> bool:
        # "* L7OK": the last check passed and the next one is running right now.
        return self.up and self.check.lstrip("* ").strip() in PASSING_CHECKS


def runtime_api_port(region: Region) -> int:
    """The rule: lb_admin_port + 1000 (config.py validates the other ports; keep this one free too)."""
    return region.lb_admin_port + RUNTIME_API_PORT_OFFSET


def backend_name(app: str) -> str:
    return f"app_{_checked_name(app, 'app')}"


def server_color(name: str) -> str:
    match = SERVER_PATTERN.match(name)
    if match is None:
        raise LoadBalancerError(f"server name '{name}' is not '<color>-<n>' (e.g. blue-1, canary-2)")
    return match.group("color")


def _checked_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise LoadBalancerError(f"{what} name '{value}' must match {NAME_PATTERN.pattern}")
    return value


def _health_paths(apps: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    paths = dict(apps) if isinstance(apps, Mapping) else dict.fromkeys(apps, DEFAULT_HEALTH_PATH)
    if not paths:
        raise LoadBalancerError("a load balancer needs at least one app (its first app is the default backend)")
    for app, path in paths.items():
        _checked_name(app, "app")
        if not HEALTH_PATH_PATTERN.match(path):
            raise LoadBalancerError(f"app '{app}': health path '{path}' must start with / and hold no spaces")
    return paths


# --- configuration and process ---------------------------------------------------------------


def render_config(region: Region, apps: Sequence[str] | Mapping[str, str], state_dir: Path) -> str:
    """haproxy.cfg for one region; `apps` is a list (health path /healthz) or {app: health path}."""
    paths = _health_paths(apps)
    default_app = next(iter(paths))
    lines = [
        f"# Region {region.name}: written by immutable.local.loadbalancer at every start; edits are lost.",
        "# No server is configured here: releases add them through the runtime API and move traffic",
        f"# with weights. Last shares per app (for restore after a restart): {_state_file(state_dir, region)}",
        "global",
        "    maxconn 4096",
        # One thread is plenty here, and it makes "the process is gone" and "its ports are free"
        # the same moment: with more, the main thread can be a zombie while another still listens.
        "    nbthread 1",
        f"    stats socket ipv4@127.0.0.1:{runtime_api_port(region)} level admin",
        "    stats timeout 10s",
        "    log stdout format raw local0 info",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option log-health-checks",
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 10s",
        "    timeout http-request 5s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 5s",
        "    timeout check 1s",
        "",
        "frontend users",
        f"    bind 127.0.0.1:{region.lb_port}",
        "    option httplog",
        "    option dontlog-normal  # log errors only: failed requests, retries, timeouts",
    ]
    for app in paths:
        lines += [
            f"    acl host_{app} req.hdr(host),field(1,:),lower -m str {app}",
            f"    acl host_{app} req.hdr(host),field(1,:),lower -m beg {app}.",
            f"    use_backend {backend_name(app)} if host_{app}",
        ]
    lines += [f"    default_backend {backend_name(default_app)}", ""]
    for app, path in paths.items():
        lines += [
            f"backend {backend_name(app)}",
            "    balance roundrobin  # dynamic: weights change at runtime without a reload",
            f"    option httpchk GET {path}",
            "    http-check expect status 200",
            "    retries 3",
            "    option redispatch 1  # retry on another server, not the one that failed",
            "    retry-on conn-failure empty-response",
            "    # servers: added at runtime (add server), named <color>-<n>",
            "",
        ]
    lines += [
        "frontend admin",
        f"    bind 127.0.0.1:{region.lb_admin_port}",
        "    no log",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 5s",
        "",
    ]
    return "\n".join(lines)


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        raise LoadBalancerError("HAProxy is not installed. Debian: `apt-get install haproxy` (2.6 or newer)")
    return found


def _admin_answers(region: Region) -> bool:
    try:
        stats = httpx.get(f"http://127.0.0.1:{region.lb_admin_port}/stats", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return stats and sock.connect_ex(("127.0.0.1", runtime_api_port(region))) == 0


def haproxy_service(
    platform: PlatformConfig, region: Region, apps: Sequence[str] | Mapping[str, str], state_dir: Path
) -> Service:
    """The region's HAProxy in the foreground (-db) under the process manager; config written now."""
    platform.region(region.name)  # a region of this platform, or a ConfigError naming the known ones
    home = state_dir / "haproxy" / region.name
    home.mkdir(parents=True, exist_ok=True)
    config = home / "haproxy.cfg"
    write_atomically(config, render_config(region, apps, state_dir))
    return Service(
        name=f"haproxy-{region.name}",
        argv=[haproxy_binary(), "-f", str(config), "-db"],
        run_dir=state_dir / "run",
        ready=functools.partial(_admin_answers, region),
        ready_timeout_s=READY_TIMEOUT_S,
        port=region.lb_port,
    )


# --- runtime API ------------------------------------------------------------------------------


def compute_weights(servers: Mapping[str, Sequence[str]], shares: Mapping[str, float]) -> dict[str, int]:
    """{server: weight} giving each color its percentage, split evenly over the color's servers.

    `servers` maps color -> server names. Colors absent from `shares` get 0. The largest per-server
    weight is MAX_WEIGHT and any positive share gets at least weight 1, so the result is exact to
    within weight rounding (well under one percentage point for up to a few servers per color).
    """
    for color, share in shares.items():
        if not 0 <= share <= 100:
            raise LoadBalancerError(f"share of '{color}' is {share}; shares are percentages between 0 and 100")
    total = sum(shares.values())
    if abs(total - 100) > SHARES_TOLERANCE_PCT:
        raise LoadBalancerError(f"shares {dict(shares)} sum to {total}, not 100")
    empty = sorted(c for c, s in shares.items() if s > 0 and not servers.get(c))
    if empty:
        raise LoadBalancerError(
            f"colors {empty} have a share > 0 but no server; servers by color: "
            f"{ {c: list(n) for c, n in servers.items()} }. Add their servers first or give them 0"
        )
    per_server = {c: shares[c] / len(servers[c]) for c in shares if shares[c] > 0}
    scale = MAX_WEIGHT / max(per_server.values())
    weights = {name: 0 for names in servers.values() for name in names}
    for color, share in per_server.items():
        for name in servers[color]:
            weights[name] = max(1, min(MAX_WEIGHT, round(share * scale)))
    return weights


def shares_from_weights(weights: Mapping[str, int]) -> dict[str, float]:
    """{color: percentage} from {server: weight}; all 0 when no server has a weight."""
    by_color: dict[str, int] = {}
    for name, weight in weights.items():
        color = server_color(name)
        by_color[color] = by_color.get(color, 0) + weight
    total = sum(by_color.values())
    return {c: round(100 * w / total, 3) if total else 0.0 for c, w in sorted(by_color.items())}


class LoadBalancer:
    """One region's HAProxy, driven through its runtime API: one command per TCP connection."""

    def __init__(self, region: Region, state_dir: Path) -> None:
        self.region = region
        self.state_dir = state_dir
        self.port = runtime_api_port(region)

    # -- the wire --

    def command(self, command: str) -> str:
        """Send one command, return HAProxy's whole answer (it closes the connection after it)."""
        if "\n" in command or ";" in command:
            raise LoadBalancerError(f"region {self.region.name}: refusing a multi-command line: {command!r}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=RUNTIME_API_TIMEOUT_S) as sock:
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise LoadBalancerError(
                f"region {self.region.name}: HAProxy's runtime API at 127.0.0.1:{self.port} did not answer "
                f"`{command}`: {exc}. Is the region's load balancer running (haproxy-{self.region.name})?"
            ) from exc
        return b"".join(chunks).decode(errors="replace").strip()

    def _expect(self, command: str, *accepted: str) -> str:
        """Run a command whose success is an empty answer or one of `accepted`; raise otherwise."""
        answer = self.command(command)
        if answer and answer not in accepted:
            raise LoadBalancerError(f"region {self.region.name}: HAProxy refused `{command}`: {answer}")
        return answer

    # -- reading --

    def servers(self, app: str) -> list[ServerState]:
        """Every server of the app's backend, sorted by name."""
        backend = backend_name(app)
        command = f"show stat {backend} 4 -1"  # type 4: servers only
        answer = self.command(command)
        if not answer.startswith("# pxname"):
            raise LoadBalancerError(
                f"region {self.region.name}: `{command}` did not return stats (is '{app}' one of this load "
                f"balancer's apps? its config lists them as backends app_<app>): {answer[:300]}"
            )
        rows = csv.DictReader(io.StringIO(answer[2:]))
        found = []
        for row in rows:
            if row.get("pxname") != backend or row.get("svname") in (None, "BACKEND", "FRONTEND"):
                continue
            address, _, port = row["addr"].rpartition(":")
            found.append(
                ServerState(
                    name=row["svname"],
                    address=address,
                    port=int(port or 0),
                    weight=int(row.get("uweight") or row.get("weight") or 0),
                    status=row["status"],
                    check=row.get("check_status", ""),
                    sessions=int(row.get("scur") or 0),
                )
            )
        return sorted(found, key=lambda s: s.name)

    def server(self, app: str, name: str) -> ServerState | None:
        return next((s for s in self.servers(app) if s.name == name), None)

    def shares(self, app: str) -> dict[str, float]:
        """Current percentage of new requests per color, from the weights HAProxy holds."""
        return shares_from_weights({s.name: s.weight for s in self.servers(app)})

    # -- changing --

    def add_server(self, app: str, name: str, host: str, port: int, wait_healthy_s: float = HEALTH_WAIT_S) -> str:
        """Add a health-checked server at weight 0 and wait for its first passing check.

        Idempotent: a server of that name at the same address is left with its weight (only
        re-enabled if it was in maintenance). At another address it is an error: remove it first.
        Returns what was done.
        """
        backend = backend_name(app)
        server_color(name)
        try:
            if ipaddress.ip_address(host).version != 4:
                raise ValueError("not IPv4")
        except ValueError as exc:
            raise LoadBalancerError(f"server {name} of {app}: host '{host}' must be an IPv4 address") from exc
        if not 0 < port < 65536:
            raise LoadBalancerError(f"server {name} of {app}: port {port} is not a TCP port")
        existing = self.server(app, name)
        if existing is not None and (existing.address, existing.port) != (host, port):
            raise LoadBalancerError(
                f"region {self.region.name}: server {backend}/{name} already exists at "
                f"{existing.address}:{existing.port}, not {host}:{port}; remove it first (remove_server)"
            )
        if existing is None:
            self._expect(
                f"add server {backend}/{name} {host}:{port} weight 0 check inter {CHECK_INTERVAL_MS} "
                f"rise {CHECK_RISE} fall {CHECK_FALL}",
                "New server registered.",
            )
            done = "added"
        else:
            done = "already present"
        # A dynamic server starts in maintenance with checks off; both are idempotent to enable.
        self._expect(f"enable health {backend}/{name}")
        self._expect(f"enable server {backend}/{name}")
        self._remember(app, servers={name: {"host": host, "port": port}})
        if wait_healthy_s > 0:
            self.wait_healthy(app, name, wait_healthy_s)
        log.info("region %s: %s/%s at %s:%s %s", self.region.name, backend, name, host, port, done)
        return done

    def wait_healthy(self, app: str, name: str, timeout_s: float = HEALTH_WAIT_S) -> ServerState:
        """Wait for a passing health check: HAProxy calls a just-enabled server UP before checking it."""
        deadline = time.monotonic() + timeout_s
        state = None
        while time.monotonic() < deadline:
            state = self.server(app, name)
            if state is None:
                break
            if state.healthy:
                return state
            time.sleep(POLL_INTERVAL_S)
        raise LoadBalancerError(
            f"region {self.region.name}: server {backend_name(app)}/{name} did not pass its health check within "
            f"{timeout_s:.0f}s (last state: {state}); it stays at weight 0. Check that the app answers 200 on its "
            "health path at that address"
        )

    def remove_server(self, app: str, name: str, drain_timeout_s: float = DRAIN_TIMEOUT_S, force: bool = False) -> str:
        """Drain to weight 0, wait for in-flight requests, disable, delete. Idempotent.

        Refuses to remove the last server carrying traffic (users would get 503) unless `force`,
        for taking an app out of the region on purpose.
        """
        backend = backend_name(app)
        state = self.server(app, name)
        if state is None:
            self._forget_server(app, name)
            return "absent"
        if state.weight > 0:
            others = sum(s.weight for s in self.servers(app) if s.name != name and s.up)
            if others == 0 and not force:
                raise LoadBalancerError(
                    f"region {self.region.name}: {backend}/{name} carries all of {app}'s traffic "
                    f"(shares {self.shares(app)}); move it elsewhere with set_shares before removing it"
                )
            self._expect(f"set server {backend}/{name} weight 0")
        deadline = time.monotonic() + drain_timeout_s
        while state is not None and state.sessions > 0 and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            state = self.server(app, name)
        if state is not None and state.sessions > 0:
            log.warning(
                "region %s: %s/%s still has %s sessions after draining %.0fs; disabling it anyway",
                self.region.name,
                backend,
                name,
                state.sessions,
                drain_timeout_s,
            )
        self._expect(f"disable server {backend}/{name}")
        deadline = time.monotonic() + DELETE_TIMEOUT_S
        while True:
            answer = self.command(f"del server {backend}/{name}")
            if answer in ("Server deleted.", "No such server."):
                break
            if time.monotonic() > deadline:
                raise LoadBalancerError(
                    f"region {self.region.name}: HAProxy refused `del server {backend}/{name}` for "
                    f"{DELETE_TIMEOUT_S:.0f}s: {answer}. It is in maintenance (no new requests); retry later"
                )
            time.sleep(POLL_INTERVAL_S)  # typically idle keep-alive connections still closing
        self._forget_server(app, name)
        log.info("region %s: %s/%s removed", self.region.name, backend, name)
        return "removed"

    def set_shares(self, app: str, shares: Mapping[str, float], require_healthy: bool = True) -> dict[str, int]:
        """Give each color its percentage of new requests; returns the weights set per server.

        Without a reload and without losing a request: every weight that grows is set before any
        weight that shrinks, so the backend never has zero total weight; roundrobin applies each
        change to the next pick while requests in flight finish where they are; servers going to
        weight 0 stay UP. With `require_healthy`, a color given a share needs a healthy server.
        """
        backend = backend_name(app)
        for color in shares:
            _checked_name(color, "color")
        current = self.servers(app)
        by_color: dict[str, list[str]] = {}
        for server in current:
            by_color.setdefault(server.color, []).append(server.name)
        weights = compute_weights(by_color, shares)
        if require_healthy:
            sick = sorted(c for c, s in shares.items() if s > 0 and not any(x.healthy for x in current if x.color == c))
            if sick:
                states = {x.name: f"{x.status} {x.check}" for x in current if x.color in sick}
                raise LoadBalancerError(
                    f"region {self.region.name}: {app}: colors {sick} would get traffic but none of their servers "
                    f"is healthy ({states}); nothing was changed"
                )
        before = {s.name: s.weight for s in current}
        order = sorted(weights, key=lambda n: (weights[n] <= before[n], n))  # raises first, then cuts
        for name in order:
            if weights[name] != before[name]:
                self._expect(f"set server {backend}/{name} weight {weights[name]}")
        recorded = {c: float(shares.get(c, 0.0)) for c in sorted(set(by_color) | set(shares))}
        self._remember(app, shares=recorded)
        log.info("region %s: %s shares %s -> weights %s", self.region.name, app, recorded, weights)
        return weights

    def restore(self, app: str) -> dict[str, float]:
        """After an HAProxy restart: re-add the recorded servers, then re-apply the recorded shares."""
        memo = self._read_state().get("apps", {}).get(app, {})
        failures = []
        for name, address in sorted(memo.get("servers", {}).items()):
            try:
                self.add_server(app, name, address["host"], int(address["port"]))
            except LoadBalancerError as exc:
                failures.append(str(exc))
        shares = memo.get("shares", {})
        if sum(shares.values()) > 0 and not failures:
            self.set_shares(app, shares)
        if failures:
            raise LoadBalancerError(
                f"region {self.region.name}: restoring {app} failed for some servers; shares were not re-applied: "
                + "; ".join(failures)
            )
        return dict(shares)

    # -- the memo file --

    @property
    def state_file(self) -> Path:
        return _state_file(self.state_dir, self.region)

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {"apps": {}}
        except (OSError, ValueError) as exc:
            raise LoadBalancerError(f"{self.state_file}: unreadable ({exc}); delete it and re-add the servers") from exc
        return data if isinstance(data, dict) else {"apps": {}}

    @contextlib.contextmanager
    def _locked_state(self) -> Generator[dict[str, Any], None, None]:
        """Read-modify-write under a lock: tasks of several apps may change one region at once."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_file.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read_state()
            yield data
            write_atomically(self.state_file, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _remember(
        self,
        app: str,
        servers: Mapping[str, Mapping[str, Any]] | None = None,
        shares: Mapping[str, float] | None = None,
    ) -> None:
        with self._locked_state() as data:
            entry = data.setdefault("apps", {}).setdefault(app, {"servers": {}, "shares": {}})
            entry.setdefault("servers", {}).update(servers or {})
            if shares is not None:
                entry["shares"] = dict(shares)
            entry["updated"] = time.time()

    def _forget_server(self, app: str, name: str) -> None:
        actual = self.shares(app)
        with self._locked_state() as data:
            entry = data.setdefault("apps", {}).setdefault(app, {"servers": {}, "shares": {}})
            entry.setdefault("servers", {}).pop(name, None)
            if entry.get("shares"):
                entry["shares"] = actual  # what the remaining weights give now
            entry["updated"] = time.time()


def _state_file(state_dir: Path, region: Region) -> Path:
    return state_dir / "haproxy" / region.name / "state.json"


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same folder, then rename: readers (Prometheus, other tasks) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
