"""A client for Airflow's REST API v2, used by the demo and the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from immutable.sqlite_settings import SQLITE_BUSY_TIMEOUT_S

TERMINAL_RUN_STATES = {"success", "failed"}
POLL_S = 2.0  # seconds between polls of a running DAG run
# A busy SQLite metadata database answers HTTP 500 ("database is locked") now and then; such a
# request is tried again, with this many seconds between tries.
SERVER_ERROR_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
# The API server's own writer may wait up to SQLITE_BUSY_TIMEOUT_S for the database lock (the
# dag-processor writes every DAG at start); a client that gave up sooner would fail a request the
# server was about to answer.
REQUEST_TIMEOUT_S = SQLITE_BUSY_TIMEOUT_S + 30.0


class AirflowApiError(RuntimeError):
    pass


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str, *, transport: Any = None) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT_S, transport=transport)
        response = self._http.post("/auth/token", json={"username": username, "password": password})
        if response.status_code not in (200, 201):
            raise AirflowApiError(f"login to {self.base_url} as {username} failed: HTTP {response.status_code}")
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; a server error (HTTP 5xx) or a request that timed out is tried again a few
        times. Only for requests that are safe to repeat: a trigger names its run, so a repeat
        cannot make a second one."""
        import httpx

        for pause_s in SERVER_ERROR_BACKOFF_S:
            try:
                response = self._http.request(method, f"/api/v2{path}", **kwargs)
                if response.status_code < 500:
                    return response
            except httpx.TimeoutException:
                pass
            time.sleep(pause_s)
        return self._http.request(method, f"/api/v2{path}", **kwargs)  # the last try's answer or error

    def get(self, path: str, **params: Any) -> Any:
        response = self.request("GET", path, params=params or None)
        if response.status_code >= 400:
            raise AirflowApiError(f"GET {path}: HTTP {response.status_code} {response.text[:500]}")
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
        """Wait until the dag-processor has parsed `dag_id`; fail early on an import error."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = self.request("GET", f"/dags/{dag_id}")
            if response.status_code == 200:
                return dict(response.json())
            errors = self.get("/importErrors").get("import_errors", [])
            if errors:
                shown = "\n".join(f"{e['filename']}: {e['stack_trace'][-800:]}" for e in errors)
                raise AirflowApiError(f"DAG files failed to import:\n{shown}")
            time.sleep(POLL_S)
        raise AirflowApiError(f"DAG {dag_id} did not appear within {timeout_s:.0f}s; is the dag-processor running?")

    def unpause(self, dag_id: str) -> None:
        response = self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        if response.status_code >= 400:
            raise AirflowApiError(f"unpausing {dag_id}: HTTP {response.status_code} {response.text[:300]}")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> Any:
        """Returns the raw response so callers can inspect a refusal (HTTP 400 for bad params).

        The run id is chosen here, so a trigger repeated after a server error finds its own run
        (HTTP 409) instead of starting a second one; that run is then what comes back."""
        from datetime import UTC, datetime

        run_id = f"manual__{datetime.now(UTC).isoformat()}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        response = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
        if response.status_code == 409:
            existing = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if existing.status_code == 200 and existing.json().get("conf") == conf:
                return existing
        return response

    def trigger_ok(self, dag_id: str, conf: dict[str, Any]) -> str:
        response = self.trigger(dag_id, conf)
        if response.status_code >= 400:
            raise AirflowApiError(f"trigger {dag_id} refused: HTTP {response.status_code} {response.text[:500]}")
        return str(response.json()["dag_run_id"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        return {
            ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""): ti["state"] or "none"
            for ti in body["task_instances"]
        }

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout_s: float = 1800.0,
        on_change: Callable[[str, str], None] | None = None,
    ) -> str:
        deadline = time.monotonic() + timeout_s
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if on_change is not None:
                for task, state in sorted(self.task_states(dag_id, run_id).items()):
                    if seen.get(task) != state:
                        seen[task] = state
                        on_change(task, state)
            state = str(self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state in TERMINAL_RUN_STATES:
                if on_change is not None:
                    for task, task_state in sorted(self.task_states(dag_id, run_id).items()):
                        if seen.get(task) != task_state:
                            on_change(task, task_state)
                return state
            time.sleep(POLL_S)
        raise AirflowApiError(f"{dag_id} run {run_id} did not finish within {timeout_s:.0f}s")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        body = self.get(path, deserialize=True, **({"map_index": map_index} if map_index >= 0 else {}))
        return body["value"]

    def task_log_events(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> list[Any]:
        """The task's log as Airflow stores it: structured events (dicts with `event`, `timestamp`,
        `level`...), and plain strings for lines that are not."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        return list(self.get(path, full_content=True, map_index=map_index).get("content", []))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log as plain lines (`level event`), as the UI's log view shows them."""
        lines = []
        for entry in self.task_log_events(dag_id, run_id, task_id, try_number, map_index):
            if isinstance(entry, str):
                lines.append(entry)
                continue
            event = str(entry.get("event", ""))
            level = str(entry.get("level") or "").upper()
            lines.append(f"{level:<7} {event}" if level else event)
            # A failure's exception travels beside the event, as the UI shows it under the line.
            for error in entry.get("error_detail") or []:
                if isinstance(error, dict):
                    lines.append(f"{error.get('exc_type', 'Error')}: {error.get('exc_value', '')}")
        return "\n".join(lines)

    def latest_asset_event(self, asset_name: str) -> dict[str, Any] | None:
        assets = self.get("/assets", name_pattern=asset_name)["assets"]
        matching = [a for a in assets if a["name"] == asset_name]
        if not matching:
            return None
        events = self.get("/assets/events", asset_id=matching[0]["id"], order_by="-timestamp", limit=1)
        found = events.get("asset_events", [])
        return dict(found[0]) if found else None
