"""One real HAProxy per region: the local platform's load balancer, driven through its runtime API.

Each region's HAProxy listens on 127.0.0.1 only:

- `region.lb_port`: users' traffic, routed by the Host header (`<app>` or `<app>.<anything>`) to the
  backend `app_<app>`;
- `region.lb_admin_port`: the stats page at /stats and the Prometheus exporter at /metrics;
- `runtime_api_port(region)` = `region.lb_admin_port + RUNTIME_API_PORT_OFFSET` (1000): the runtime
  API (`stats socket ... level admin`), over TCP so no unix socket permissions get in the way.

The configuration holds no servers. Releases add servers named `<color>-<n>` (blue-1, green-2,
canary-1, ...) at runtime and move traffic by changing their weights, never by reloading. The one
reload is for an app the running configuration has no backend for (an app spec added after the
load balancer started): `ensure_app` adds it seamlessly, with every server and weight kept.

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
import socket
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from immutable.config import Region

# The names and files (haproxy_names), the configuration and process (haproxy_config) and the
# shares-to-weights arithmetic (haproxy_weights) live beside this module; import them from here.
from immutable.local.haproxy_config import (
    apps_path,
    haproxy_binary,
    haproxy_service,
    master_command,
    render_config,
    write_config,
)
from immutable.local.haproxy_names import (
    CHECK_FALL,
    CHECK_INTERVAL_MS,
    CHECK_RISE,
    LoadBalancerError,
    _checked_name,
    _state_file,
    backend_name,
    exchange,
    lb_home,
    runtime_api_port,
    server_color,
    server_line,
    write_atomically,
)
from immutable.local.haproxy_weights import compute_weights, shares_from_weights

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "CHECK_FALL",
    "CHECK_INTERVAL_MS",
    "CHECK_RISE",
    "LoadBalancer",
    "LoadBalancerError",
    "ServerState",
    "backend_name",
    "compute_weights",
    "haproxy_binary",
    "haproxy_service",
    "render_config",
    "runtime_api_port",
    "server_color",
    "shares_from_weights",
    "write_atomically",
]

RUNTIME_API_TIMEOUT_S = 5.0  # one command's connect + answer
HEALTH_WAIT_S = 15.0  # how long add_server waits for the first passing health check
DRAIN_TIMEOUT_S = 30.0  # how long remove_server waits for in-flight requests on a drained server
DELETE_TIMEOUT_S = 10.0  # how long remove_server retries `del server` while connections close
POLL_INTERVAL_S = 0.2
# How long an UP server whose last check failed may take to be healthy again or DOWN: a fall's
# checks, one interval more for the check under way, and that check's own timeout (1 s).
SETTLE_S = (CHECK_FALL + 1) * CHECK_INTERVAL_MS / 1000 + 1.0
RELOAD_WAIT_S = 20.0  # how long ensure_app waits for the reloaded worker to answer with the new backend
PASSING_CHECKS = ("L7OK", "L7OKC")


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


def _changes_runtime(method: Callable[P, T]) -> Callable[P, T]:
    """A change to HAProxy's runtime state: never while `ensure_app` reloads (the reload carries the
    state over as it was when it began; a change made meanwhile would be lost)."""

    @functools.wraps(method)
    def under_lock(*args: P.args, **kwargs: P.kwargs) -> T:
        balancer = args[0]
        assert isinstance(balancer, LoadBalancer)
        with balancer._runtime_lock(fcntl.LOCK_SH):
            return method(*args, **kwargs)

    return under_lock


def parse_servers_state(answer: str) -> dict[str, list[tuple[str, str, int]]]:
    """app -> its servers (name, address, port), from `show servers state` (format 1)."""
    servers: dict[str, list[tuple[str, str, int]]] = {}
    lines = answer.splitlines()
    if not lines or lines[0].strip() != "1":
        raise LoadBalancerError(f"unexpected `show servers state` answer: {answer[:200]}")
    header = next((line.lstrip("# ").split() for line in lines if line.startswith("#")), [])
    for line in lines[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        row = dict(zip(header, line.split(), strict=False))
        backend = row["be_name"]
        if backend.startswith("app_"):
            servers.setdefault(backend.removeprefix("app_"), []).append(
                (row["srv_name"], row["srv_addr"], int(row["srv_port"]))
            )
    return servers


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
                return exchange(sock, command)
        except OSError as exc:
            raise LoadBalancerError(
                f"region {self.region.name}: HAProxy's runtime API at 127.0.0.1:{self.port} did not answer "
                f"`{command}`: {exc}. Is the region's load balancer running (haproxy-{self.region.name})?"
            ) from exc

    def _expect(self, command: str, *accepted: str) -> str:
        """Run a command whose success is an empty answer or one of `accepted`; raise otherwise."""
        answer = self.command(command)
        if answer and answer not in accepted:
            raise LoadBalancerError(f"region {self.region.name}: HAProxy refused `{command}`: {answer}")
        return answer

    # -- reading --

    def servers(self, app: str) -> list[ServerState]:
        """Every server of the app's backend, sorted by name; none for an app this load balancer has no
        backend for yet (added since it started: its first launch adds the backend, `ensure_app`)."""
        backend = backend_name(app)
        command = f"show stat {backend} 4 -1"  # type 4: servers only
        answer = self.command(command)
        if answer.startswith("No such proxy") and backend not in self.backends():
            return []
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

    @_changes_runtime
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
            self._expect(f"add {server_line(f'{backend}/{name}', host, port)}", "New server registered.")
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

    @_changes_runtime
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

    @_changes_runtime
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
        if require_healthy:
            current = self._settled(app, current, [c for c, s in shares.items() if s > 0])
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

    def _settled(self, app: str, current: list[ServerState], colors: list[str]) -> list[ServerState]:
        """The servers once no color in `colors` is undecided: a color with no healthy server but one
        still UP whose last check failed (a check that timed out on a busy machine, "UP 1/2 L4TOUT")
        gets the next checks to say whether it is back or down, never longer than a fall takes."""

        def undecided(servers: list[ServerState]) -> bool:
            return any(
                not any(x.healthy for x in servers if x.color == c) and any(x.up for x in servers if x.color == c)
                for c in colors
            )

        deadline = time.monotonic() + SETTLE_S
        while undecided(current) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            current = self.servers(app)
        return current

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

    # -- a new app: a seamless reload --

    def backends(self) -> set[str]:
        answer = self.command("show backend")
        return {line.strip() for line in answer.splitlines() if line.strip() and not line.startswith("#")}

    def ensure_app(self, app: str, health_path: str) -> bool:
        """Make sure this HAProxy has a backend for `app`. One added after it started (a new app spec)
        is added by a seamless reload: every server of every app is written into the configuration,
        their weights, health and maintenance carried over through the server-state file, and the
        listening sockets handed to the new worker, so no request is refused or lost. True if reloaded."""
        backend = backend_name(app)
        if backend in self.backends():
            return False
        with self._runtime_lock(fcntl.LOCK_EX):
            if backend in self.backends():  # another task added it while this one waited
                return False
            home = lb_home(self.state_dir, self.region)
            try:
                paths = json.loads(apps_path(self.state_dir, self.region).read_text())
            except (OSError, ValueError) as exc:
                where = apps_path(self.state_dir, self.region)
                raise LoadBalancerError(f"region {self.region.name}: {where}: {exc}; restart it (make up)") from exc
            paths[app] = health_path
            state = self.command("show servers state")
            write_atomically(home / "servers.state", state + "\n")
            write_config(self.region, paths, self.state_dir, servers=parse_servers_state(state))
            answer = master_command(self.state_dir, self.region, "reload")
            deadline = time.monotonic() + RELOAD_WAIT_S
            while backend not in self._backends_or_none():
                if time.monotonic() > deadline:
                    raise LoadBalancerError(
                        f"region {self.region.name}: HAProxy did not serve backend {backend} within "
                        f"{RELOAD_WAIT_S:.0f}s of its reload (master said: {answer or 'nothing'}); its log is in "
                        f"{self.state_dir / 'run'}"
                    )
                time.sleep(POLL_INTERVAL_S)
        log.warning("region %s: added app %s to the load balancer by a seamless reload", self.region.name, app)
        return True

    def _backends_or_none(self) -> set[str]:
        try:
            return self.backends()
        except LoadBalancerError:  # the stats socket passes to the new worker: a moment without an answer
            return set()

    @contextlib.contextmanager
    def _runtime_lock(self, mode: int) -> Generator[None, None, None]:
        path = lb_home(self.state_dir, self.region) / "runtime.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as lock:
            fcntl.flock(lock, mode)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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
