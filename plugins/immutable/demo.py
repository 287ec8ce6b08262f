"""`make demo`: run the base-image pipeline through Airflow's REST API and show where things are.

Expects the embedded Airflow and the local platform to be up (`make demo` starts them first).
"""

from __future__ import annotations

import sys
import time

from immutable.airflow_api import AirflowApi, AirflowApiError
from immutable.localctl import AIRFLOW_PORT, AIRFLOW_USER, airflow_password

STATE_MARK = {"success": "ok", "failed": "FAILED", "skipped": "skipped", "upstream_failed": "not run"}


def show(message: str) -> None:
    print(message, flush=True)


def run_base_image(api: AirflowApi) -> dict[str, object]:
    api.wait_for_dag("base_image")
    api.unpause("base_image")
    run_id = api.trigger_ok("base_image", {"reason": "manual"})
    show(f"\nbase_image: triggered run {run_id}")
    started = time.monotonic()

    def on_change(task: str, state: str) -> None:
        if state in ("none", "scheduled", "queued"):
            return
        show(f"  {time.monotonic() - started:6.0f}s  {task:<18} {STATE_MARK.get(state, state)}")

    state = api.wait_for_run("base_image", run_id, on_change=on_change)
    states = api.task_states("base_image", run_id)
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


def main() -> None:
    url = f"http://127.0.0.1:{AIRFLOW_PORT}"
    password = airflow_password()
    try:
        api = AirflowApi(url, AIRFLOW_USER, password)
        candidate = run_base_image(api)
    except AirflowApiError as exc:
        sys.exit(f"[immutable] demo failed: {exc}")
    show("\n=== base image candidate ===")
    for key in ("version", "digest", "image", "reason", "cves"):
        show(f"  {key:<8} {candidate.get(key)}")
    show("\n=== Airflow ===")
    show(f"  UI       {url}")
    show(f"  user     {AIRFLOW_USER}")
    show(f"  password {password}")
    show("\nStop everything with: make down")


if __name__ == "__main__":
    main()
