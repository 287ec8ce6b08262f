"""`make bench` as the README gives it: every benchmark prints its figures. Its own platform and
ports (bench/bench_platform.yaml), so it runs in a worker of its own beside the other tests."""

from __future__ import annotations

import os

import pytest

from tests.conftest import make

pytestmark = [pytest.mark.usefixtures("docker_engine")]


def test_bench_prints_its_figures() -> None:
    """`make bench` as the README gives it, with fewer repetitions (the figures' kinds are the same)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "IMMUTABLE_", "PYTEST"))}
    output = make("bench", env | {"IMMUTABLE_BENCH_QUICK": "1"}, timeout_s=1800)
    assert "IMMUTABLE_BENCH_QUICK=1: fewer repetitions" in output
    for figure in (
        "cold build (no cache)",
        "warm build",
        "base image size",
        "common libraries share",
        "parse time",
        "a task, process start to its DAG, 200 apps / 1 app",
        "every DAG, 200 apps:",
        "copy wall time, empty regions",
        "app layer(s) not in the base",
        "app-only change, warm cache",
        "LB reports 100% on the new color",
        "failed requests (>= 500 or no answer)",
        "ratio redeploy / flip back",
        "Hostile config files: time and peak memory to refuse",
        "synchronized flip skew",
        "triggerer CPU share of one core",
        "Prometheus query latency, median / p95 / max",
        "verdicts within one step of their due time",
        "release overhead on the running scheduler",  # measured when the demo runs, else says how
    ):
        assert figure in output, output[-2000:]
