"""What a region's HAProxy calls things and where it keeps them: the runtime API port, backend and
server names, the memo file, and the atomic writes its files (and Prometheus') rely on."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

from immutable.config import Region

RUNTIME_API_PORT_OFFSET = 1000  # runtime API port = lb_admin_port + this
CHECK_INTERVAL_MS = 1000  # health check interval of every server
CHECK_RISE = 1  # passing checks before a DOWN server is UP again
CHECK_FALL = 2  # failing checks before an UP server is DOWN

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")  # apps and colors
SERVER_PATTERN = re.compile(r"^(?P<color>[a-z][a-z0-9-]{0,30})-(?P<n>[0-9]{1,4})$")


class LoadBalancerError(RuntimeError):
    """A runtime API command failed or the load balancer is not in the state an operation needs."""


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


def lb_home(state_dir: Path, region: Region) -> Path:
    """The region's HAProxy files: haproxy.cfg, apps.json, state.json, servers.state, master.sock."""
    return state_dir / "haproxy" / region.name


def _state_file(state_dir: Path, region: Region) -> Path:
    return lb_home(state_dir, region) / "state.json"


def server_line(name: str, host: str, port: int) -> str:
    """A server at weight 0 with the health check every server has; weights are set at runtime."""
    return f"server {name} {host}:{port} weight 0 check inter {CHECK_INTERVAL_MS} rise {CHECK_RISE} fall {CHECK_FALL}"


def exchange(sock: socket.socket, command: str) -> str:
    """Send one command on a connected socket, read HAProxy's whole answer (it closes after it)."""
    sock.sendall(command.encode() + b"\n")
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


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
