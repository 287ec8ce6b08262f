"""Airflow notifiers for what a person should hear of without opening the UI, configured in
include/platform.yaml (`notifications`; nobody by default): a release failed (with its cause), a
release or rollback put the previous color back, a person stopped a release, an approval waits, a
base image was published or promoted. Each event is one JSON POST to each webhook that asked for it
and one mail (the smtp provider's `SmtpNotifier`, through an Airflow SMTP connection) to each
address list that did, with the app, version, regions, cause and a link to the task in the UI.

The notifiers are the DAGs' task callbacks: a release's failure callback (every task: the one
that failed says why), the rollback task's success, the stop's, base_image's `publish` and
promote_base's `promote`. A receiver that does not answer is logged, never fails the task.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    from immutable.config import Email, Notifications

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 10.0
CAUSE_MAX_CHARS = 500


def ui_link(dag_id: str, run_id: str, task_id: str) -> str:
    """The task in the Airflow UI: at `[api] base_url` if set, else where the API server listens."""
    from urllib.parse import quote

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or (
        f"http://{conf.get('api', 'host', fallback='localhost')}:{conf.get('api', 'port', fallback='8080')}"
    )
    return f"{base.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id)}"


def first_line(error: object) -> str:
    """An error's first line, shortened: the cause sentence a receiver reads."""
    text = str(error or "").strip()
    return (text.splitlines() or ["unknown"])[0][:CAUSE_MAX_CHARS]


def _own_return(context: Any) -> Any:
    ti = context["ti"]
    return ti.xcom_pull(task_ids=ti.task_id)


def _app_of(dag_id: str) -> str | None:
    for prefix in ("release_", "rollback_", "stop_"):
        if dag_id.startswith(prefix):
            return dag_id.removeprefix(prefix)
    return None


def _release_failed(context: Any) -> dict[str, Any]:
    ti = context["ti"]
    plan = ti.xcom_pull(task_ids="validate") or {}
    app = plan.get("app") or _app_of(ti.dag_id)
    version = plan.get("version") or (context.get("params") or {}).get("version") or None
    cause = first_line(context.get("exception"))
    return {
        "app": app,
        "version": version,
        "regions": list(plan.get("regions", [])),
        "cause": cause,
        "subject": f"The release of {app} {version or ''} failed at {ti.task_id}: {cause}".replace("  ", " "),
    }


def _rolled_back(context: Any) -> dict[str, Any] | None:
    from immutable.pipelines.production import TRAFFIC_WENT_BACK

    ti = context["ti"]
    done = _own_return(context)
    if isinstance(done, dict):  # a release's rollback task: region -> what it undid there
        # Only where traffic went back: removing idle fleets or a canary the teardown had not yet
        # removed (the rollback and the canary's teardown may run in either order) changed nothing.
        regions = sorted(region for region, what in done.items() if TRAFFIC_WENT_BACK in what)
        plan = ti.xcom_pull(task_ids="validate") or {}
        app, version = plan.get("app") or _app_of(ti.dag_id), plan.get("version")
        cause = "; ".join(f"{region}: {done[region]}" for region in regions)
        subject = f"The release of {app} {version} was rolled back in {', '.join(regions)}"
    else:  # a rollback_<app> run: the outcome of each region it was asked for
        outcomes = [o for o in ti.xcom_pull(task_ids="rollback_region") or [] if isinstance(o, dict)]
        regions = sorted(str(o["region"]) for o in outcomes)
        app = _app_of(ti.dag_id)
        version = next((str(o["to"]["version"]) for o in outcomes if o.get("to")), None)
        cause = "; ".join(f"{o['region']}: {o['how']}" for o in outcomes)
        subject = f"{app} was rolled back to {version} in {', '.join(regions)}"
    if not regions:
        return None  # nothing had changed: nothing was rolled back
    return {"app": app, "version": version, "regions": regions, "cause": cause, "subject": subject}


def _stopped(context: Any) -> dict[str, Any]:
    ti, params = context["ti"], context.get("params") or {}
    app = _app_of(ti.dag_id)
    by = getattr(context.get("dag_run"), "triggering_user_name", None) or "an unnamed user"
    done = _own_return(context) or {}
    regions = sorted(done) if isinstance(done, dict) else []
    reason = str(params.get("reason") or "")
    return {
        "app": app,
        "version": None,
        "regions": regions,
        "cause": f"stopped by {by}: {reason}",
        "subject": f"The release of {app} was stopped by {by}: {reason}",
    }


def _approval_waiting(context: Any) -> dict[str, Any]:
    task = context["task"]
    return {
        "app": getattr(task, "app", None),
        "version": None,
        "regions": [],
        "cause": None,
        "subject": getattr(task, "subject", ""),
        "body": getattr(task, "body", ""),
        "timeout_s": task.response_timeout.total_seconds() if getattr(task, "response_timeout", None) else None,
    }


def _base_published(context: Any) -> dict[str, Any]:
    published = _own_return(context) or {}
    cves = list(published.get("cves") or [])
    return {
        "app": None,
        "version": published.get("version"),
        "regions": [],
        "cause": f"{published.get('reason', 'a rebuild')}" + (f" for {', '.join(cves)}" if cves else ""),
        "digest": published.get("digest"),
        "subject": f"Base image {published.get('version')} published as the candidate ({published.get('reason')})",
    }


def _base_promoted(context: Any) -> dict[str, Any]:
    promoted = _own_return(context) or {}
    return {
        "app": None,
        "version": promoted.get("version"),
        "regions": [],
        "cause": promoted.get("why"),
        "digest": promoted.get("digest"),
        "subject": f"Base image {promoted.get('version')} is stable: {promoted.get('why')}",
    }


NOTICES: dict[str, Callable[[Any], dict[str, Any] | None]] = {
    "release_failed": _release_failed,
    "rolled_back": _rolled_back,
    "stopped": _stopped,
    "approval_waiting": _approval_waiting,
    "base_published": _base_published,
    "base_promoted": _base_promoted,
}


def notice(event: str, context: Any) -> dict[str, Any] | None:
    """What a receiver is told of `event` in this task's context, or None when there is nothing to tell."""
    found = NOTICES[event](context)
    if found is None:
        return None
    ti = context["ti"]
    return {
        "event": event,
        **found,
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "link": ui_link(ti.dag_id, ti.run_id, ti.task_id),
    }


def mail_body(told: dict[str, Any]) -> str:
    """The notice as a small HTML table; every value escaped."""
    rows = "".join(
        f"<tr><th align='left'>{html.escape(key)}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in told.items()
        if key not in ("subject", "link") and value not in (None, "", [])
    )
    link = html.escape(told["link"], quote=True)
    return f"<p>{html.escape(told['subject'])}</p><table>{rows}</table><p><a href='{link}'>{link}</a></p>"


class WebhookNotifier(BaseNotifier):
    """POSTs the notice as JSON."""

    def __init__(self, *, url: str, event: str) -> None:
        super().__init__()
        self.url = url
        self.event = event

    def notify(self, context: Any) -> None:
        import httpx

        told = notice(self.event, context)
        if told is None:
            return
        try:
            response = httpx.post(self.url, json=told, timeout=WEBHOOK_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("could not notify %s of %s: %s", self.url, self.event, exc)
            return
        log.info("notified %s: %s", self.url, told["subject"])


class EmailNotifier(BaseNotifier):
    """Mails the notice through the smtp provider's notifier and the named Airflow SMTP connection."""

    def __init__(self, *, to: list[str], connection_id: str, from_email: str | None, event: str) -> None:
        super().__init__()
        self.to = to
        self.connection_id = connection_id
        self.from_email = from_email
        self.event = event

    def notify(self, context: Any) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        told = notice(self.event, context)
        if told is None:
            return
        mail = SmtpNotifier(
            to=self.to,
            from_email=self.from_email,
            subject=f"[immutable] {told['subject']}"[:300],
            html_content=mail_body(told),
            smtp_conn_id=self.connection_id,
        )
        try:
            mail.notify(context)  # not mail(context): the texts are ours, not Jinja templates
        except Exception as exc:
            log.warning("could not mail %s of %s through %s: %s", self.to, self.event, self.connection_id, exc)
            return
        log.info("mailed %s: %s", self.to, told["subject"])


def _email(mail: Email, event: str) -> EmailNotifier:
    return EmailNotifier(to=mail.to, connection_id=mail.connection_id, from_email=mail.from_email, event=event)


def notifiers_for(event: str, configured: Notifications | None = None) -> list[BaseNotifier]:
    """The notifiers the platform's configuration names for `event`."""
    if configured is None:
        from immutable.config import load_platform

        configured = load_platform().notifications
    hooks: list[BaseNotifier] = [WebhookNotifier(url=url, event=event) for url in configured.webhook_urls(event)]
    return hooks + [_email(mail, event) for mail in configured.mail_for(event)]
