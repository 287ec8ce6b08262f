"""A region's HAProxy process: its haproxy.cfg and the service that runs it under the process manager.

At start the configuration holds no servers: releases add them at runtime. HAProxy runs in
master-worker mode so that a new app's backend can be added by a seamless reload (`reload_config`):
the configuration is written again with every server running now, the runtime state (weights,
health, maintenance) is dumped to the server-state file the new worker loads, and the listening
sockets pass to the new worker (`expose-fd listeners`) while the old one finishes its requests.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from immutable.config import PlatformConfig, Region
from immutable.local.haproxy_names import (
    LoadBalancerError,
    _checked_name,
    _state_file,
    backend_name,
    exchange,
    lb_home,
    runtime_api_port,
    server_line,
    write_atomically,
)
from immutable.local.services import Service

DEFAULT_HEALTH_PATH = "/healthz"
READY_TIMEOUT_S = 20.0
HEALTH_PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._~/%?&=+-]*$")


def _health_paths(apps: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    paths = dict(apps) if isinstance(apps, Mapping) else dict.fromkeys(apps, DEFAULT_HEALTH_PATH)
    if not paths:
        raise LoadBalancerError("a load balancer needs at least one app (its first app is the default backend)")
    for app, path in paths.items():
        _checked_name(app, "app")
        if not HEALTH_PATH_PATTERN.match(path):
            raise LoadBalancerError(f"app '{app}': health path '{path}' must start with / and hold no spaces")
    return paths


Servers = Mapping[str, Sequence[tuple[str, str, int]]]  # app -> (server name, host, port)


def render_config(
    region: Region, apps: Sequence[str] | Mapping[str, str], state_dir: Path, servers: Servers | None = None
) -> str:
    """haproxy.cfg for one region; `apps` is a list (health path /healthz) or {app: health path};
    `servers`: the ones running now, written in for a reload (their weights come from the state file)."""
    paths = _health_paths(apps)
    servers = servers or {}
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
        f"    stats socket ipv4@127.0.0.1:{runtime_api_port(region)} level admin expose-fd listeners",
        f"    server-state-file {lb_home(state_dir, region) / 'servers.state'}",
        "    stats timeout 10s",
        "    log stdout format raw local0 info",
        "",
        "defaults",
        "    mode http",
        "    load-server-state-from-file global  # after a reload: weights, health and maintenance as they were",
        "    log global",
        "    option log-health-checks",
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 10s",
        "    timeout http-request 5s",
        "    timeout http-keep-alive 10s",
        # A reload (a new app's backend) soft-stops the old process: by default it closes its idle
        # keep-alive connections at once, and a request a client sends on one at that moment fails
        # ("server disconnected"). With this it answers that request, then closes the connection.
        "    option idle-close-on-response",
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
            *(f"    {server_line(name, host, port)}" for name, host, port in servers.get(app, ())),
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


def config_path(state_dir: Path, region: Region) -> Path:
    return lb_home(state_dir, region) / "haproxy.cfg"


def apps_path(state_dir: Path, region: Region) -> Path:
    """The apps (and health paths) the running configuration has a backend for."""
    return lb_home(state_dir, region) / "apps.json"


def master_socket(state_dir: Path, region: Region) -> Path:
    return lb_home(state_dir, region) / "master.sock"


def write_config(region: Region, apps: Mapping[str, str], state_dir: Path, servers: Servers | None = None) -> Path:
    config = config_path(state_dir, region)
    write_atomically(config, render_config(region, apps, state_dir, servers))
    # In order: the first app is the default backend, whatever was added since.
    write_atomically(apps_path(state_dir, region), json.dumps(dict(apps), indent=1) + "\n")
    return config


def haproxy_service(
    platform: PlatformConfig, region: Region, apps: Sequence[str] | Mapping[str, str], state_dir: Path
) -> Service:
    """The region's HAProxy (master in the foreground, -db) under the process manager; config written now."""
    platform.region(region.name)  # a region of this platform, or a ConfigError naming the known ones
    home = lb_home(state_dir, region)
    home.mkdir(parents=True, exist_ok=True)
    # A fresh start has no servers: a state file left by an earlier process must not apply to it.
    (home / "servers.state").unlink(missing_ok=True)
    config = write_config(region, _health_paths(apps), state_dir)
    return Service(
        name=f"haproxy-{region.name}",
        argv=[haproxy_binary(), "-W", "-S", str(master_socket(state_dir, region)), "-f", str(config), "-db"],
        run_dir=state_dir / "run",
        ready=functools.partial(_admin_answers, region),
        ready_timeout_s=READY_TIMEOUT_S,
        port=region.lb_port,
    )


def master_command(state_dir: Path, region: Region, command: str) -> str:
    """One command to the master process (over its unix socket), e.g. `reload`."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(master_socket(state_dir, region)))
            return exchange(sock, command)
    except OSError as exc:
        raise LoadBalancerError(
            f"region {region.name}: HAProxy's master at {master_socket(state_dir, region)} did not answer "
            f"`{command}`: {exc}. Is haproxy-{region.name} running (it was started before master-worker mode? "
            "restart it: make down && make up)"
        ) from exc
