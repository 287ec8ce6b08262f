"""Notifications: who hears of an approval waiting, and what they are told (a real HTTP receiver on
loopback stands in for a webhook)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from immutable.config import ConfigError, load_platform
from immutable.notifications import WebhookNotifier
from tests.http_receiver import json_receiver

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
            "dag_id": "release_sample",
            "run_id": "manual__2026-11-30T12:00:00+00:00",
            "task_id": "approve_rollout",
            "subject": "Roll sample out to us-east?",
            "body": "**sample 1.4.0** waits",
            "timeout_s": 86400.0,
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
    assert load_platform(ROOT / "tests" / "platform.yaml").notifications.webhook_urls("approval_waiting") == []
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data | {"notifications": {"webhooks": [{"url": "http://127.0.0.1:1/h"}]}}))
    assert load_platform(path).notifications.webhook_urls("approval_waiting") == ["http://127.0.0.1:1/h"]
    path.write_text(
        yaml.safe_dump(data | {"notifications": {"webhooks": [{"url": "http://x/h", "events": ["released"]}]}})
    )
    with pytest.raises(ConfigError, match=r"notifications\.webhooks\.0\.events\.0.*approval_waiting"):
        load_platform(path)
