"""The integration tests' shared releases: 1.0.0 (the first, no baseline, flipped in waves) then
1.1.0 (through the canary, then one synchronized flip of all regions), run once per session with
dag.test(). Releasing is the slow part of these tests, so test_production and test_release read
the same two runs rather than each releasing its own. Waves after a canary run in tests/e2e."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.helpers import run_dag, synchronized_rollout, xcom


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
