"""Start and stop the local platform's long-running processes, each in its own process group.

A service is "ours" when its pid file exists and that process is alive. Stopping signals the
whole process group, because some programs (Airflow's components) leave children behind when
only the parent is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STOP_GRACE_S = 20.0  # seconds between SIGTERM and SIGKILL


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not alive for our purposes. But /proc/<pid>/stat is
    # the main thread only: a multi-threaded server (HAProxy, Prometheus) whose main thread has
    # exited can still hold its port from another thread, so every thread is looked at.
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        tasks = [Path(f"/proc/{pid}")]
    for task in tasks:
        try:
            if (task / "stat").read_text().split(")", 1)[1].split()[0] != "Z":
                return True
        except OSError:
            continue
    return False


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    run_dir: Path
    ready: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_timeout_s: float = 60.0
    port: int | None = None  # the port it listens on, checked free before starting

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self) -> str:
        """Start unless already running; returns what was done."""
        if self.pid() is not None:
            self._wait_ready()
            return "already running"
        if self.port is not None and port_open(self.port):
            raise RuntimeError(
                f"{self.name}: port {self.port} is already taken by a program we did not start; "
                f"stop it (`ss -ltnp | grep :{self.port}` shows which) or choose another port in the platform file"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            process = subprocess.Popen(
                list(self.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,  # its own process group, so stop() reaches every child
            )
        self.pid_file.write_text(str(process.pid))
        try:
            self._wait_ready(process)
        except BaseException:
            # Never leave a half-started service behind.
            stop_process_group(process.pid)
            self.pid_file.unlink(missing_ok=True)
            raise
        return f"started (pid {process.pid})"

    def _wait_ready(self, process: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                break
            if self.ready():
                return
            time.sleep(0.5)
        tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        raise RuntimeError(f"{self.name} did not become ready within {self.ready_timeout_s:.0f}s; log tail:\n{tail}")

    def stop(self) -> str:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return "not running"
        stop_process_group(pid)
        self.pid_file.unlink(missing_ok=True)
        if self.port is not None:
            deadline = time.monotonic() + STOP_GRACE_S
            while port_open(self.port) and time.monotonic() < deadline:
                time.sleep(0.2)
        return f"stopped (pid {pid})"


def stop_process_group(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """Stop `pid`, its process group and every descendant (some start their own sessions). A leader
    that already died may have left its group behind: our services lead their own group (pgid = pid)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pgid = pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets = _members(pgid, pid)
        if not targets:
            return
        for target in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not any(pid_alive(t) for t in targets):
                return
            time.sleep(0.2)
        log.warning("processes %s did not stop on %s", sorted(targets), sig.name)


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) for every live process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def _members(pgid: int, root: int) -> set[int]:
    """Live processes in group `pgid` plus all descendants of `root` and of those."""
    table = _process_table()
    found = {p for p, (_, group) in table.items() if group == pgid}
    if root in table:
        found.add(root)
    grew = True
    while grew:
        children = {p for p, (parent, _) in table.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found
