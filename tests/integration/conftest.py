"""The integration tests' shared releases: 1.0.0 (the first, no baseline, flipped in waves) then
1.1.0 (through the canary, then one synchronized flip of all regions), run once per session with
dag.test(). Releasing is the slow part of these tests, so test_production and test_release read
the same two runs rather than each releasing its own. Waves after a canary run in tests/e2e."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from tests.http_receiver import json_receiver
from tests.integration.helpers import run_dag, synchronized_rollout, xcom
from tests.smtp_receiver import html_text, smtp_receiver

WEBHOOK_PORT, SMTP_PORT = 8696, 8697  # tests/platform.yaml's notifications, tests/conftest.py's connection


class Notified:
    """What the test platform's notification receivers got: JSON posts and mails, as they came."""

    def __init__(self, posts: list[dict[str, Any]], mails: list[EmailMessage]) -> None:
        self.posts, self.mails = posts, mails

    def posted(self, run_id: str, event: str) -> list[dict[str, Any]]:
        return [p for p in self.posts if p["run_id"] == run_id and p["event"] == event]

    def mailed(self, run_id: str, subject_part: str) -> list[EmailMessage]:
        """Mails about this run (its link names it) whose subject says `subject_part`."""
        from urllib.parse import quote

        return [m for m in self.mails if quote(run_id, safe="") in html_text(m) and subject_part in m["Subject"]]


@pytest.fixture(scope="session", autouse=True)
def notified() -> Iterator[Notified]:
    """The webhook and the SMTP server every integration run's notifications reach."""
    with json_receiver(WEBHOOK_PORT) as (_, posts), smtp_receiver(SMTP_PORT) as (_, mails):
        yield Notified(posts, mails)


@pytest.fixture(scope="session")
def two_good_releases(base_candidate: str, production_platform: None) -> dict[str, Any]:
    first, first_states = run_dag("releases.py", "release_sample", {"version": "1.0.0", "note": "first"})
    assert str(first.state) == "success", first_states
    started = time.time()
    with synchronized_rollout():
        second, states = run_dag("releases.py", "release_sample", {"version": "1.1.0"})
    ended = time.time()
    assert str(second.state) == "success", states
    return {
        "first": first,
        "first_states": first_states,
        "second": second,
        "states": states,
        "window": (started, ended),
    }


@pytest.fixture(scope="session")
def first_release(two_good_releases: dict[str, Any]) -> dict[str, Any]:
    """The session's first release (1.0.0), as test_release reads it."""
    run = two_good_releases["first"]
    return {
        "run": run,
        "states": two_good_releases["first_states"],
        "summary": xcom(run, "summarize"),
        "baked": xcom(run, "bake"),
    }
