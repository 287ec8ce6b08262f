"""The embedded Airflow, supervised: its components run as children of this process, and one that
dies comes back by itself, after a back-off that grows while it keeps dying.

`airflow standalone` starts the same components but never restarts one: a triggerer killed while a
gate was deferred left the gate to time out and a good release to fail. Here each component
(api-server, scheduler, dag-processor, triggerer) is its own child with its own log; every exit is
logged with its cause and counted, and the state of each is written to a JSON file that
`make status` reads beside Airflow's own health endpoint.

Run by `immutable.localctl airflow-up` as one service (one process group), so `make down` stops
the supervisor and every component together.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("immutable.supervisor")

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
BACKOFF_FIRST_S = 1.0  # seconds before the first restart of a component that died
BACKOFF_MAX_S = 60.0  # the back-off doubles per quick death, up to this
STEADY_AFTER_S = 300.0  # a component that ran this long before dying starts again from the first back-off
POLL_S = 0.5  # seconds between looks at the children
STOP_GRACE_S = 20.0  # seconds a component has to stop on SIGTERM before SIGKILL
STATUS_FILE = "airflow-components.json"


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: Path
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    backoff_s: float = BACKOFF_FIRST_S
    next_start_at: float = 0.0
    last_exit: str | None = None
    last_exit_at: float | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def state(self) -> dict[str, Any]:
        return {
            "argv": " ".join(self.argv),
            "log_path": str(self.log_path),
            "pid": self.pid,
            "running": self.process is not None,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "next_start_at": self.next_start_at,
            "last_exit": self.last_exit,
            "last_exit_at": self.last_exit_at,
        }


def exit_cause(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def next_backoff(ran_s: float, backoff_s: float) -> float:
    """The wait before the restart after this one: back to the first after a steady run, else doubled."""
    return BACKOFF_FIRST_S if ran_s >= STEADY_AFTER_S else min(BACKOFF_MAX_S, backoff_s * 2)


def read_status(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The components' state as the supervisor last wrote it ({} when it never ran)."""
    try:
        return dict(json.loads((run_dir / STATUS_FILE).read_text())["components"])
    except (OSError, ValueError, KeyError):
        return {}


class Supervisor:
    def __init__(self, airflow: str, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = env
        self.components = [Component(name, [airflow, name], run_dir / f"airflow-{name}.log") for name in COMPONENTS]
        self.stopping = False

    def write_status(self) -> None:
        path = self.run_dir / STATUS_FILE
        body = {"supervisor_pid": os.getpid(), "at": time.time(), "components": {}}
        body["components"] = {c.name: c.state() for c in self.components}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
        tmp.replace(path)

    def start(self, component: Component) -> None:
        with open(component.log_path, "ab") as out:
            component.process = subprocess.Popen(
                component.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        component.pid = component.process.pid
        component.started_at = time.time()
        log.info("%s started (pid %d, restarts so far: %d)", component.name, component.pid, component.restarts)

    def reap(self, component: Component, code: int) -> None:
        now = time.time()
        ran_s = now - (component.started_at or now)
        component.process, component.pid = None, None
        component.last_exit, component.last_exit_at = exit_cause(code), now
        component.restarts += 1
        wait_s = component.backoff_s if ran_s < STEADY_AFTER_S else BACKOFF_FIRST_S
        component.next_start_at = now + wait_s
        component.backoff_s = next_backoff(ran_s, wait_s)
        log.warning(
            "%s %s after %.0fs; restart %d in %.0fs (log: %s)",
            component.name,
            component.last_exit,
            ran_s,
            component.restarts,
            wait_s,
            component.log_path,
        )

    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run(
            [self.components[0].argv[0], "db", "migrate"], env=self.env, capture_output=True, text=True
        )
        if migrate.returncode != 0:
            log.error(
                "airflow db migrate failed (exit %d):\n%s",
                migrate.returncode,
                migrate.stdout[-3000:] + migrate.stderr[-3000:],
            )
            return 1
        log.info("database ready; starting %s", ", ".join(COMPONENTS))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_signal)
        try:
            self.supervise()
        finally:  # whatever ends the loop, no component outlives its supervisor
            self.stop_all()
        return 0

    def supervise(self) -> None:
        while not self.stopping:
            changed = False
            for component in self.components:
                if component.process is None:
                    if time.time() >= component.next_start_at:
                        self.start(component)
                        changed = True
                elif (code := component.process.poll()) is not None:
                    self.reap(component, code)
                    changed = True
            if changed:
                self.write_status()
            time.sleep(POLL_S)

    def _stop_signal(self, signum: int, _: object) -> None:
        log.info("stopping every component (signal %d)", signum)
        self.stopping = True

    def stop_all(self) -> None:
        running = [c for c in self.components if c.process is not None]
        for component in running:
            component.process.terminate()  # type: ignore[union-attr]
        deadline = time.time() + STOP_GRACE_S
        for component in running:
            try:
                component.process.wait(max(0.1, deadline - time.time()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                component.process.kill()  # type: ignore[union-attr]
            component.process, component.pid = None, None
        self.write_status()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="immutable.local.supervisor", description=__doc__)
    parser.add_argument("--run-dir", type=Path, required=True, help="where the status file and the logs go")
    parser.add_argument("--airflow", default=str(Path(sys.executable).parent / "airflow"), help="the airflow program")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [supervisor] %(message)s", stream=sys.stdout)
    sys.exit(Supervisor(args.airflow, args.run_dir, dict(os.environ)).run())


if __name__ == "__main__":
    main()
