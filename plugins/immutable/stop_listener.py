"""A release run marked failed by hand must not leave a half-flipped platform.

Marking a run failed (UI or REST) ends it at once: its `rollback` task and its teardowns never run.
Airflow tells listeners of it in the process that did it (the API server); this one then triggers
`stop_<app>`, whose `make_safe` task undoes what that run changed, as its rollback task would have.
Registered by plugins/releases_plugin.py.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

RELEASE_PREFIX = "release_"
MARKED_BY_HAND = "manually set"  # Airflow's message when a person sets a run's state


def stop_conf_for(dag_id: str, run_id: str, msg: str) -> tuple[str, dict[str, str]] | None:
    """The stop DAG to trigger, and its form, for a run that ended failed; None when nothing must be undone
    (not a release, or a failure the run's own rollback task handles)."""
    if not dag_id.startswith(RELEASE_PREFIX) or MARKED_BY_HAND not in msg:
        return None
    app = dag_id.removeprefix(RELEASE_PREFIX)
    return f"stop_{app}", {
        "reason": f"{dag_id} run {run_id} was marked failed by hand; undoing what it changed",
        "marked_failed_run": run_id,
    }


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    wanted = stop_conf_for(str(dag_run.dag_id), str(dag_run.run_id), str(msg or ""))
    if wanted is None:
        return
    # Not in this call: the request that marked the run holds its database transaction until it
    # returns, and SQLite (the embedded default) lets one writer at a time; the thread's write waits
    # for that request to commit, then goes in.
    threading.Thread(
        target=_trigger_stop, args=(*wanted, str(dag_run.run_id)), name="stop-after-mark-failed", daemon=True
    ).start()


def _trigger_stop(stop_dag_id: str, conf: dict[str, str], run_id: str) -> None:
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    try:
        trigger_dag(stop_dag_id, triggered_by=DagRunTriggeredByType.REST_API, conf=conf)
    except Exception:  # nothing to raise to: say it where the API server logs
        log.exception("could not trigger %s after %s was marked failed", stop_dag_id, run_id)
        return
    log.warning("%s was marked failed by hand: triggered %s to undo what it changed", run_id, stop_dag_id)
