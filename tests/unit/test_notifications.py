"""Notifications: who hears of what, and what they are told (a real HTTP receiver and a real SMTP server
on loopback stand in for a webhook and a mailbox)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from immutable.config import ConfigError, load_platform
from immutable.notifications import EmailNotifier, WebhookNotifier, notice, notifiers_for
from tests.http_receiver import json_receiver
from tests.smtp_receiver import free_port, html_text, smtp_connection, smtp_receiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with json_receiver() as found:
        yield found


def approval_context() -> dict[str, Any]:
    task = SimpleNamespace(app="sample", subject="Roll sample out to us-east?", body="**sample 1.4.0** waits")
    task.response_timeout = timedelta(days=1)
    ti = SimpleNamespace(dag_id="release_sample", run_id="manual__2026-11-30T12:00:00+00:00", task_id="approve_rollout")
    return {"task": task, "ti": ti}


def test_a_waiting_approval_is_posted_once_with_what_to_answer_and_where(
    receiver: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__API__HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__API__PORT", "8089")
    url, received = receiver
    WebhookNotifier(url=url, event="approval_waiting").notify(approval_context())
    assert received == [
        {
            "event": "approval_waiting",
            "app": "sample",
            "version": None,
            "regions": [],
            "cause": None,
            "subject": "Roll sample out to us-east?",
            "body": "**sample 1.4.0** waits",
            "timeout_s": 86400.0,
            "dag_id": "release_sample",
            "run_id": "manual__2026-11-30T12:00:00+00:00",
            "task_id": "approve_rollout",
            "link": "http://127.0.0.1:8089/dags/release_sample/runs/manual__2026-11-30T12%3A00%3A00%2B00%3A00/tasks/"
            "approve_rollout",
        }
    ]


def test_a_receiver_that_does_not_answer_is_logged_and_the_approval_still_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    WebhookNotifier(url="http://127.0.0.1:9/nobody", event="approval_waiting").notify(approval_context())
    assert "could not notify http://127.0.0.1:9/nobody of approval_waiting" in caplog.text


def test_webhooks_are_configured_per_event_and_an_unknown_event_is_named(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "tests" / "platform.yaml").read_text())
    assert (
        load_platform(ROOT / "include" / "platform.yaml").notifications.webhook_urls("approval_waiting") == []
    )  # nobody by default
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data | {"notifications": {"webhooks": [{"url": "http://127.0.0.1:1/h"}]}}))
    assert load_platform(path).notifications.webhook_urls("approval_waiting") == ["http://127.0.0.1:1/h"]
    assert load_platform(path).notifications.webhook_urls("release_failed") == ["http://127.0.0.1:1/h"]  # all events
    path.write_text(
        yaml.safe_dump(data | {"notifications": {"webhooks": [{"url": "http://x/h", "events": ["released"]}]}})
    )
    with pytest.raises(ConfigError, match=r"notifications\.webhooks\.0\.events\.0.*release_failed"):
        load_platform(path)


class FakeTaskInstance:
    """The task instance a callback gets: ids, and the XComs of its run (by task id)."""

    def __init__(self, dag_id: str, task_id: str, xcoms: dict[str, Any]) -> None:
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, "manual__2026-12-01T05:00:00+00:00"
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str) -> Any:
        return self.xcoms.get(task_ids)


PLAN = {"app": "sample", "version": "1.2.0", "regions": ["eu-west", "us-east", "ap-south"]}


def test_a_failed_release_tells_its_cause_from_the_task_that_failed() -> None:
    ti = FakeTaskInstance("release_sample", "canary.analysis", {"validate": PLAN})
    error = RuntimeError("The canary of sample 1.2.0 failed its analysis in eu-west on error_rate: 0.3 > 0.01\nscores")
    told = notice("release_failed", {"ti": ti, "exception": error, "params": {"version": "1.2.0"}})
    assert told is not None
    assert told["app"] == "sample" and told["version"] == "1.2.0" and told["regions"] == PLAN["regions"]
    assert told["cause"] == "The canary of sample 1.2.0 failed its analysis in eu-west on error_rate: 0.3 > 0.01"
    assert told["subject"].startswith("The release of sample 1.2.0 failed at canary.analysis: The canary")
    assert told["link"].endswith(
        "/dags/release_sample/runs/manual__2026-12-01T05%3A00%3A00%2B00%3A00/tasks/canary.analysis"
    )
    # Failing before the plan exists (a bad trigger at validate): the form's version, no regions.
    early = notice("release_failed", {"ti": FakeTaskInstance("release_sample", "validate", {}), "exception": "bad"})
    assert early is not None and early["app"] == "sample" and early["regions"] == [] and early["cause"] == "bad"


def test_a_rollback_tells_where_it_put_the_previous_color_back_and_is_silent_when_nothing_changed() -> None:
    from immutable.pipelines.production import NOTHING_TO_UNDO

    undone = {"eu-west": "traffic went back to blue (flipped)", "us-east": NOTHING_TO_UNDO, "ap-south": NOTHING_TO_UNDO}
    ti = FakeTaskInstance("release_sample", "rollback", {"validate": PLAN, "rollback": undone})
    told = notice("rolled_back", {"ti": ti})
    assert told is not None and told["regions"] == ["eu-west"] and told["version"] == "1.2.0"
    assert told["cause"] == "eu-west: traffic went back to blue (flipped)"
    nothing = dict.fromkeys(PLAN["regions"], NOTHING_TO_UNDO)
    assert notice("rolled_back", {"ti": FakeTaskInstance("release_sample", "rollback", {"rollback": nothing})}) is None
    # The rollback ran before the canary's teardown and removed the canary itself: nothing took traffic back.
    leftovers = {**nothing, "eu-west": "removed ['sample-eu-west-canary-1', 'sample-eu-west-baseline-1']"}
    ti = FakeTaskInstance("release_sample", "rollback", {"rollback": leftovers})
    assert notice("rolled_back", {"ti": ti}) is None
    # A rollback_<app> run: each region's outcome.
    outcomes = [
        {"region": "eu-west", "how": "flipped back to the kept color", "to": {"version": "1.0.0"}},
        {"region": "us-east", "how": "redeployed the previous release by digest", "to": {"version": "1.0.0"}},
    ]
    ti = FakeTaskInstance("rollback_sample", "redeployed", {"rollback_region": outcomes, "redeployed": []})
    told = notice("rolled_back", {"ti": ti})
    assert told is not None and told["regions"] == ["eu-west", "us-east"] and told["version"] == "1.0.0"
    assert told["subject"] == "sample was rolled back to 1.0.0 in eu-west, us-east"


def test_a_stop_and_the_base_events_tell_who_what_and_why() -> None:
    dag_run = SimpleNamespace(triggering_user_name="alice")
    ti = FakeTaskInstance("stop_sample", "make_safe", {"make_safe": {"eu-west": "blue live", "us-east": "blue live"}})
    told = notice("stopped", {"ti": ti, "dag_run": dag_run, "params": {"reason": "bad numbers"}})
    assert told is not None and told["cause"] == "stopped by alice: bad numbers"
    assert told["regions"] == ["eu-west", "us-east"] and told["app"] == "sample"
    published = {"version": "2026.12.01.2", "digest": "sha256:ab", "reason": "security", "cves": ["CVE-2026-1"]}
    told = notice("base_published", {"ti": FakeTaskInstance("base_image", "publish", {"publish": published})})
    assert told is not None and told["version"] == "2026.12.01.2" and told["cause"] == "security for CVE-2026-1"
    promoted = {"version": "2026.12.01.2", "digest": "sha256:ab", "why": "fast_track: a security rebuild"}
    told = notice("base_promoted", {"ti": FakeTaskInstance("promote_base", "promote", {"promote": promoted})})
    assert told is not None and told["subject"] == "Base image 2026.12.01.2 is stable: fast_track: a security rebuild"


def test_a_mail_goes_through_airflows_smtp_connection_to_a_real_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_receiver() as (port, mails):
        monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_SMTP", smtp_connection(port))
        ti = FakeTaskInstance("release_sample", "canary.analysis", {"validate": PLAN})
        context = {"ti": ti, "exception": RuntimeError("error_rate 0.3 > 0.01 <script>")}
        EmailNotifier(to=["ops@example.com"], connection_id="notify_smtp", from_email=None, event="release_failed")(
            context
        )
        assert len(mails) == 1, mails
    mail = mails[0]
    assert mail["To"] == "ops@example.com" and mail["From"] == "immutable@localhost"
    assert (
        mail["Subject"]
        == "[immutable] The release of sample 1.2.0 failed at canary.analysis: error_rate 0.3 > 0.01 <script>"
    )
    body = html_text(mail)
    assert "error_rate 0.3 &gt; 0.01 &lt;script&gt;" in body and "<script>" not in body
    assert "/dags/release_sample/runs/" in body and "eu-west" in body


def test_an_smtp_server_that_does_not_answer_is_logged_and_the_task_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_SMTP", smtp_connection(free_port()))
    context = {"ti": FakeTaskInstance("base_image", "publish", {"publish": {"version": "v", "reason": "weekly"}})}
    EmailNotifier(to=["ops@example.com"], connection_id="notify_smtp", from_email=None, event="base_published")(context)
    assert "could not mail ['ops@example.com'] of base_published through notify_smtp" in caplog.text


def test_each_receiver_gets_only_the_events_it_asked_for(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "tests" / "platform.yaml").read_text())
    data["notifications"] = {
        "webhooks": [{"url": "http://127.0.0.1:1/h", "events": ["release_failed"]}],
        "email": [{"to": ["ops@example.com"], "connection_id": "notify_smtp", "events": ["rolled_back", "stopped"]}],
    }
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    configured = load_platform(path).notifications
    assert [type(n).__name__ for n in notifiers_for("release_failed", configured)] == ["WebhookNotifier"]
    assert [type(n).__name__ for n in notifiers_for("stopped", configured)] == ["EmailNotifier"]
    assert notifiers_for("base_promoted", configured) == []
    data["notifications"]["email"][0]["to"] = ["not an address"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"notifications\.email\.0\.to\.0"):
        load_platform(path)
