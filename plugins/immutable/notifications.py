"""Airflow notifiers for what a person should hear of without opening the UI, configured in
include/platform.yaml (`notifications`; nobody by default). Today: an approval waiting for an answer,
posted as JSON to each webhook that asked for `approval_waiting`."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 10.0


def ui_link(dag_id: str, run_id: str, task_id: str) -> str:
    """The task in the Airflow UI: at `[api] base_url` if set, else where the API server listens."""
    from urllib.parse import quote

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or (
        f"http://{conf.get('api', 'host', fallback='localhost')}:{conf.get('api', 'port', fallback='8080')}"
    )
    return f"{base.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id)}"


def approval_waiting_payload(context: Any) -> dict[str, Any]:
    """What a receiver needs to act: which release asks what, and where to answer."""
    task, ti = context["task"], context["ti"]
    return {
        "event": "approval_waiting",
        "app": getattr(task, "app", None),
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "subject": getattr(task, "subject", ""),
        "body": getattr(task, "body", ""),
        "timeout_s": task.response_timeout.total_seconds() if getattr(task, "response_timeout", None) else None,
        "link": ui_link(ti.dag_id, ti.run_id, ti.task_id),
    }


class WebhookNotifier(BaseNotifier):
    """POSTs the event as JSON. A receiver that does not answer is logged, never fails the task:
    the approval waits in the UI whoever heard of it."""

    def __init__(self, *, url: str, event: str) -> None:
        super().__init__()
        self.url = url
        self.event = event

    def notify(self, context: Any) -> None:
        import httpx

        payload = approval_waiting_payload(context)
        try:
            response = httpx.post(self.url, json=payload, timeout=WEBHOOK_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("could not notify %s of %s: %s", self.url, self.event, exc)
            return
        log.info("notified %s: %s", self.url, payload["subject"])


def notifiers_for(event: str) -> list[BaseNotifier]:
    """The notifiers the platform's configuration names for `event`."""
    from immutable.config import load_platform

    return [WebhookNotifier(url=url, event=event) for url in load_platform().notifications.webhook_urls(event)]
