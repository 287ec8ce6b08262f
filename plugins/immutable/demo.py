"""`make demo`: the whole story through Airflow's REST API, with live progress in the terminal.

Builds the base image (the candidate), releases the canary-tier sample app 1.0.0 on it across
every region, which lets promote_base make the candidate stable, releases the critical-tier
sample-critical 1.0.0 on the stable base, then sample 1.1.0 and a bad 1.2.0 that the canary stops
and rolls back, and ends with what runs where and on which base. A second run reuses what is
there: versions already released are not released again.
Expects the embedded Airflow and the local platform to be up (`make demo` starts them first).
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from typing import Any, TextIO

from immutable.airflow_api import TERMINAL_RUN_STATES, AirflowApi, AirflowApiError
from immutable.localctl import AIRFLOW_PORT, AIRFLOW_USER, airflow_password

STATE_MARK = {"success": "ok", "failed": "FAILED", "skipped": "skipped", "upstream_failed": "not run"}
BUSY_STATES = ("running", "deferred")
POLL_S = 2.0  # seconds between polls of the run
NOTE_EVERY_S = 30.0  # seconds between progress lines of a long task when the output is not a terminal
SCORE_EVERY_S = 5.0  # seconds between reads of a deferred gate's log for its latest score
SCORE_LINE = re.compile(r"interval (\d+)/(\d+): score (\d+) \((\w+)\)")  # the canary trigger's log line
BAR_WIDTH = 24  # characters
RUN_TIMEOUT_S = 1800.0  # seconds a run may take before the demo gives up on it


def show(message: str) -> None:
    print(message, flush=True)


APP = "sample"  # the canary tier: tries each new base candidate first
CRITICAL_APP = "sample-critical"  # the critical tier: the same code, on the stable base only
APPS = (APP, CRITICAL_APP)
BAD_VERSION = "1.2.0"  # turns bad after 15 s of traffic: passes dev and staging, fails the canary
STABLE_WAIT_S = 600.0  # how long the demo waits for promote_base to make the first candidate stable


def progress(elapsed_s: float, usual_s: float | None) -> str:
    """A bar against how long the task took last time, or just the time so far the first time."""
    if not usual_s or usual_s <= 0:
        return f"{elapsed_s:.0f}s"
    fraction = min(elapsed_s / usual_s, 0.99)  # never "done" before Airflow says so
    filled = int(fraction * BAR_WIDTH)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}  {elapsed_s:.0f}s of ~{usual_s:.0f}s"


def latest_score(log: str) -> str | None:
    """The canary gate's latest judged interval, e.g. 'interval 1/2: score 100 (continue)'."""
    found = SCORE_LINE.findall(log)
    if not found:
        return None
    number, total, score, decision = found[-1]
    return f"interval {number}/{total}: score {score} ({decision})"


REAL_WORK_S = 2.0  # a task done quicker did nothing worth a bar (a first release's skipped canary)
YARDSTICK_RUNS = 10  # how far back to look for a run in which a task did real work


def yardsticks(runs: list[list[dict[str, Any]]]) -> dict[str, float]:
    """Per task, its duration in the latest run (newest first) in which it succeeded and did real
    work: the progress bars' yardstick. Pure."""
    found: dict[str, float] = {}
    for task_instances in runs:
        for ti in task_instances:
            key = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
            duration = float(ti.get("duration") or 0)
            if key not in found and ti.get("state") == "success" and duration >= REAL_WORK_S:
                found[key] = duration
    return found


def usual_durations(api: AirflowApi, dag_id: str) -> dict[str, float]:
    """How long each task took the last time it did real work, over the DAG's latest runs."""
    runs = api.get(f"/dags/{dag_id}/dagRuns", order_by="-start_date", limit=YARDSTICK_RUNS)["dag_runs"]
    return yardsticks(
        [
            api.get(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances", limit=100)["task_instances"]
            for run in runs
            if run["state"] in ("success", "failed")
        ]
    )


class StatusLine:
    """One line redrawn in place on a terminal; elsewhere (CI logs) a plain line now and then."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.live = out.isatty()
        self.drawn = False

    def clear(self) -> None:
        if self.drawn:
            self.out.write("\r\033[K")
            self.out.flush()
            self.drawn = False

    def draw(self, text: str) -> None:
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            self.out.write(f"\r\033[K{text[:width]}")
            self.out.flush()
            self.drawn = True


def run_and_follow(api: AirflowApi, dag_id: str, conf: dict[str, object]) -> tuple[str, str, dict[str, str]]:
    """Trigger, then print each task's state as it changes, a progress bar for long tasks and a
    deferred gate's latest score; returns (run id, state, task states). Runs the scheduler started
    (a new base's Asset event) end first: this one would only queue behind them."""
    wait_until_idle(api, dag_id)
    usual = usual_durations(api, dag_id)
    run_id = api.trigger_ok(dag_id, conf)
    show(f"\n{dag_id} {conf}: run {run_id}")
    started = time.monotonic()
    status = StatusLine()
    seen: dict[str, str] = {}
    busy_since: dict[str, float] = {}
    noted: dict[str, float] = {}
    scores: dict[str, str] = {}
    score_read: dict[str, float] = {}

    def line(task: str, text: str) -> None:
        status.clear()
        show(f"  {time.monotonic() - started:6.0f}s  {task:<32} {text}")

    def changes(states: dict[str, str]) -> None:
        for task, state in sorted(states.items()):
            if seen.get(task) == state:
                continue
            seen[task] = state
            if state in BUSY_STATES:
                busy_since.setdefault(task, time.monotonic())
            if state in ("none", "scheduled", "queued"):
                continue
            note = "  (waiting in the triggerer, no worker slot held)" if state == "deferred" else ""
            line(task, f"{STATE_MARK.get(state, state)}{note}")

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        states = api.task_states(dag_id, run_id)
        changes(states)
        now = time.monotonic()
        busy = [t for t, s in sorted(states.items()) if s in BUSY_STATES]
        for task in busy:
            if states[task] == "deferred" and "[" not in task and now - score_read.get(task, 0.0) >= SCORE_EVERY_S:
                score_read[task] = now
                try:
                    score = latest_score(api.task_log(dag_id, run_id, task))
                except AirflowApiError:  # the score is a courtesy: a log not served yet must not stop the demo
                    score = None
                if score and scores.get(task) != score:
                    scores[task] = score
                    line(task, f"gate {score}")
            if not status.live and now - noted.get(task, busy_since[task]) >= NOTE_EVERY_S:
                noted[task] = now
                line(task, f"still {states[task]}  {progress(now - busy_since[task], usual.get(task))}")
        if busy:
            status.draw("  " + "   ".join(f"{t} {progress(now - busy_since[t], usual.get(t))}" for t in busy[:2]))
        state = str(api.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])
        if state in TERMINAL_RUN_STATES:
            final = api.task_states(dag_id, run_id)
            changes(final)
            status.clear()
            return run_id, state, final
        time.sleep(POLL_S)
    status.clear()
    raise AirflowApiError(f"{dag_id} run {run_id} did not finish within {RUN_TIMEOUT_S:.0f}s")


def wait_until_idle(api: AirflowApi, dag_id: str) -> None:
    """Until the DAG has no queued or running run (each is named once, with who started it)."""
    named: set[str] = set()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        active = [
            run
            for state in ("queued", "running")
            for run in api.get(f"/dags/{dag_id}/dagRuns", state=state, limit=10)["dag_runs"]
        ]
        if not active:
            return
        for run in active:
            if run["dag_run_id"] not in named:
                named.add(run["dag_run_id"])
                show(f"\n{dag_id}: waiting for run {run['dag_run_id']} ({run.get('run_type')}) to end first")
        if time.monotonic() > deadline:
            raise AirflowApiError(f"{dag_id} still has runs going after {RUN_TIMEOUT_S:.0f}s: {named}")
        time.sleep(POLL_S)


def failure_cause(api: AirflowApi, dag_id: str, run_id: str, states: dict[str, str]) -> str:
    """The cause of a failed run: a failed gate's first sentence first, else the first failed task's error."""
    causes: list[tuple[int, str]] = []
    for task, state in states.items():
        if state != "failed":
            continue
        task_id, _, index = task.partition("[")  # a mapped task is "<task_id>[<map_index>]"
        map_index = int(index.rstrip("]")) if index else -1
        for line in api.task_log(dag_id, run_id, task_id, map_index=map_index).splitlines():
            for rank, marker in enumerate(("GateFailed: ", "Error: ")):
                if marker in line:
                    causes.append((rank, f"{task}: {line.split(marker, 1)[1].strip()}"))
                    break
        if not any(cause.startswith(f"{task}: ") for _, cause in causes):
            causes.append((2, f"{task} failed (see its log)"))
    return min(causes)[1] if causes else "unknown"


def run_base_image(api: AirflowApi) -> dict[str, object]:
    api.wait_for_dag("base_image")
    api.unpause("base_image")
    run_id, state, states = run_and_follow(api, "base_image", {"reason": "manual"})
    if state != "success":
        failed = [t for t, s in states.items() if s == "failed"]
        for task in failed:
            show(f"\n--- last lines of {task}'s log ---")
            show("\n".join(api.task_log("base_image", run_id, task).splitlines()[-25:]))
        raise SystemExit(f"\nbase_image run {run_id} failed at {', '.join(failed) or 'an unknown task'}.")
    if states.get("publish") == "success":
        show("base_image: a new candidate was built and published")
        return dict(api.xcom("base_image", run_id, "publish"))
    show("base_image: nothing new upstream; the candidate stays as it is (see check_updates' log)")
    return current_candidate_summary()


def current_candidate_summary() -> dict[str, object]:
    """The registry is the truth about what the candidate is, whichever run published it."""
    from immutable.config import load_base_spec, load_platform
    from immutable.images import base
    from immutable.registry import RegistryClient

    spec, platform = load_base_spec(), load_platform()
    candidate = base.current_candidate(spec, platform)
    if candidate.digest is None:
        raise SystemExit("no base-image candidate is in the registry; trigger base_image with force=true")
    labels = RegistryClient(platform.build_registry).labels(spec.repository, base.CANDIDATE_TAG) or {}
    return {
        "version": candidate.version,
        "digest": candidate.digest,
        "image": f"{platform.build_registry}/{spec.repository}@{candidate.digest}",
        "reason": labels.get(base.LABEL_REASON),
        "cves": labels.get(base.LABEL_CVES, "").split(",") if labels.get(base.LABEL_CVES) else [],
    }


def verified_text(candidate: dict[str, object]) -> str:
    """What the candidate's security rebuild proved. A published candidate's CVE label lists what
    `verify_cves` checked: publish never runs unless every id named is fixed."""
    verified = candidate.get("cves_verified", candidate.get("cves")) or []
    if not isinstance(verified, list) or not verified:
        return "no CVE named (a routine rebuild): nothing to verify"
    source = candidate.get("security_tracker") or "Debian's security tracker data"
    return f"{', '.join(map(str, verified))} fixed in the image (checked against {source})"


def base_sbom_text(candidate: dict[str, object]) -> str:
    """Where the candidate's SBOM is read (CycloneDX, its Debian packages)."""
    from immutable.config import load_base_spec
    from immutable.platforms import platform_for

    url = platform_for().images.sbom_url(None, load_base_spec().repository, str(candidate["digest"]))
    return url or "none stored beside it"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("-")[0].split("."))


def release_unless_live(api: AirflowApi, app: str, version: str) -> None:
    """Release `app` at `version` unless every region already runs it or a newer one."""
    from immutable.ui.releases import what_runs_where

    placements = what_runs_where([app])
    live = [str(p.live["version"]) for p in placements if p.live]
    if len(live) == len(placements) and all(version_key(v) >= version_key(version) for v in live):
        show(f"\nrelease_{app} {version}: already released (live: {sorted(set(live))}); not releasing again")
        return
    run_id, state, states = run_and_follow(api, f"release_{app}", {"version": version, "note": "demo"})
    if state != "success":
        raise SystemExit(f"release {version} failed: {failure_cause(api, f'release_{app}', run_id, states)}")


def wait_for_a_stable_base(api: AirflowApi) -> dict[str, Any]:
    """The critical tier builds on the stable base only. The first one comes from promote_base, which
    the scheduler runs after each canary-tier release (the Asset `release/sample`)."""
    from immutable.ui.releases import stable_base

    stable = stable_base()
    if stable is None:
        show("\npromote_base: waiting for it to make the candidate stable (sample runs it everywhere now)")
        deadline = time.monotonic() + STABLE_WAIT_S
        while (stable := stable_base()) is None:
            if time.monotonic() > deadline:
                runs = api.get("/dags/promote_base/dagRuns", order_by="-start_date", limit=1)["dag_runs"]
                last = runs[0]["dag_run_id"] if runs else None
                why = api.task_log("promote_base", last, "check_promotion").splitlines()[-5:] if last else []
                raise SystemExit(
                    f"no stable base after {STABLE_WAIT_S:.0f}s; promote_base's last check said:\n" + "\n".join(why)
                )
            time.sleep(POLL_S)
        runs = api.get("/dags/promote_base/dagRuns", order_by="-start_date", limit=1)["dag_runs"]
        show(f"promote_base: base {stable['version']} is stable (run {runs[0]['dag_run_id'] if runs else '?'})")
    return stable


def run_releases(api: AirflowApi) -> list[str]:
    """Both tiers' good versions, then the bad one; what is already done is not done again."""
    for app in APPS:
        api.wait_for_dag(f"release_{app}")
        api.unpause(f"release_{app}")
    api.wait_for_dag("promote_base")
    api.unpause("promote_base")
    release_unless_live(api, APP, "1.0.0")
    wait_for_a_stable_base(api)
    release_unless_live(api, CRITICAL_APP, "1.0.0")
    release_unless_live(api, APP, "1.1.0")
    earlier = api.get(f"/dags/release_{APP}/dagRuns", limit=100, order_by="-start_date")["dag_runs"]
    bad_runs = [r for r in earlier if (r.get("conf") or {}).get("version") == BAD_VERSION and r["state"] == "failed"]
    if bad_runs:
        run_id = bad_runs[0]["dag_run_id"]
        show(f"\nrelease_{APP} {BAD_VERSION}: already tried in run {run_id}; not releasing again")
        states = api.task_states(f"release_{APP}", run_id)
    else:
        run_id, state, states = run_and_follow(api, f"release_{APP}", {"version": BAD_VERSION, "note": "demo: bad"})
        if state != "failed":
            raise SystemExit(f"release {BAD_VERSION} should have been stopped, but its run ended {state}")
    return [f"{APP} {BAD_VERSION}: {failure_cause(api, f'release_{APP}', run_id, states)}"]


def print_summary(rolled_back: list[str]) -> None:
    from immutable.app_spec import app_spec
    from immutable.ui.releases import base_text, behind_stable, lineage_text, stable_base, what_runs_where

    placements = what_runs_where(list(APPS))
    show("\n=== what runs where ===")
    show(
        f"  {'app':<16} {'tier':<9} {'region':<10} {'version':<8} {'color':<6} {'digest':<22} {'base':<35} "
        "kept for rollback"
    )
    tiers = {app: app_spec(app).tier for app in APPS}
    for p in placements:
        lead = f"  {p.app:<16} {tiers[p.app]:<9} {p.region:<10}"
        if p.live is None:
            show(f"{lead} (nothing)")
            continue
        kept_text = f"{p.kept['version']} ({p.kept['color']})" if p.kept else "-"
        show(
            f"{lead} {p.live['version']!s:<8} {p.live['color']!s:<6} {str(p.live['digest'])[:21]:<22} "
            f"{base_text(p.base):<35} {kept_text}"
        )
    show("\n=== SBOMs (CycloneDX, signed with the image) ===")
    for app in APPS:
        sbom = next((p for p in placements if p.app == app and p.sbom), None)
        if sbom is not None and sbom.live is not None:
            show(f"  {app:<16} {sbom.live['version']!s:<8} {sbom.sbom}")
    show("\n=== bases ===")
    stable = stable_base()
    for line in lineage_text(stable, behind_stable(placements, stable)):
        show(f"  {line}")
    show("\n=== rolled back ===")
    for line in rolled_back:
        show(f"  {line[:400]}")


def main() -> None:
    url = f"http://127.0.0.1:{AIRFLOW_PORT}"
    password = airflow_password()
    try:
        api = AirflowApi(url, AIRFLOW_USER, password)
        candidate = run_base_image(api)
        rolled_back = run_releases(api)
    except AirflowApiError as exc:
        sys.exit(f"[immutable] demo failed: {exc}")
    show("\n=== base image candidate ===")
    for key in ("version", "digest", "image", "reason", "cves"):
        show(f"  {key:<8} {candidate.get(key)}")
    show(f"  verified {verified_text(candidate)}")
    show(f"  sbom     {base_sbom_text(candidate)}")
    print_summary(rolled_back)
    show("\n=== Airflow ===")
    show(f"  UI       {url}")
    show(f"  user     {AIRFLOW_USER}")
    show(f"  password {password}")
    show("\nStop everything with: make down")


if __name__ == "__main__":
    main()
