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
import io
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutable.config import Region

# The names and files (haproxy_names), the configuration and process (haproxy_config) and the
# shares-to-weights arithmetic (haproxy_weights) live beside this module; import them from here.
from immutable.local.haproxy_config import haproxy_binary, haproxy_service, render_config
from immutable.local.haproxy_names import (
    LoadBalancerError,
    _checked_name,
    _state_file,
    backend_name,
    runtime_api_port,
    server_color,
    write_atomically,
)
from immutable.local.haproxy_weights import compute_weights, shares_from_weights

log = logging.getLogger(__name__)

__all__ = [
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
CHECK_INTERVAL_MS = 1000  # health check interval of every server added at runtime
CHECK_RISE = 1  # passing checks before a DOWN server is UP again
CHECK_FALL = 2  # failing checks before an UP server is DOWN
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
