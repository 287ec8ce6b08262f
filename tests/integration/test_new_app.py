"""An app spec added while the platform runs: its first release reaches every piece that knows the
apps (each region's load balancer by a seamless reload, the traffic generator, Prometheus' targets)
with no restart, while the app already there keeps its users without one failed request."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_APPS, TEST_STATE
from tests.integration.helpers import APP, REGIONS, live_versions, run_dag

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform", "airflow_db", "production_platform")]

NEW_APP, VERSION = "sample2", "2.0.0"  # the sample's code under another name


def new_app_stats() -> dict[str, dict[str, Any]]:
    from immutable.local.traffic import read_stats

    return {region: counts.get(NEW_APP, {}) for region, counts in read_stats(TEST_STATE).get("regions", {}).items()}


def test_a_new_app_is_released_on_the_running_platform_while_another_takes_traffic(
    two_good_releases: dict[str, Any],
) -> None:
    from immutable.config import load_platform
    from immutable.local.fleets import COLORS, LocalFleets
    from immutable.local.loadbalancer import LoadBalancer
    from immutable.local.prometheus import targets_dir
    from immutable.local.traffic import failures_between

    platform = load_platform()
    balancers = {region.name: LoadBalancer(region, TEST_STATE) for region in platform.regions}
    assert not [name for name, lb in balancers.items() if f"app_{NEW_APP}" in lb.backends()]
    before = live_versions()
    spec = (TEST_APPS / f"{APP}.yaml").read_text().replace(f"name: {APP}\n", f"name: {NEW_APP}\n", 1)
    assert f"name: {NEW_APP}\n" in spec
    (TEST_APPS / f"{NEW_APP}.yaml").write_text(spec)
    started = time.time()
    try:
        run, states = run_dag("releases.py", f"release_{NEW_APP}", {"version": VERSION})
        ended = time.time()
        assert str(run.state) == "success", states
        for region in platform.regions:
            assert f"app_{NEW_APP}" in balancers[region.name].backends(), region.name
            answer = httpx.get(f"http://127.0.0.1:{region.lb_port}/version", headers={"Host": NEW_APP}, timeout=5)
            assert answer.status_code == 200 and f'"version": "{VERSION}"' in answer.text, (region.name, answer.text)
        assert live_versions() == before  # the app already there: untouched, served all along
        assert failures_between(TEST_STATE, started, ended) == []
        assert list(targets_dir(TEST_STATE).glob(f"{NEW_APP}__*")), "no Prometheus targets for the new app"
        # Its users: the traffic generator found the spec and sends to it now that it is released.
        deadline = time.monotonic() + 30
        while not all(stats.get("by_class", {}).get("2xx", 0) > 0 for stats in new_app_stats().values()):
            assert time.monotonic() < deadline, new_app_stats()
            time.sleep(1)
        assert all(stats["failed"] == 0 for stats in new_app_stats().values()), new_app_stats()
    finally:
        fleets = LocalFleets(platform, TEST_STATE)
        for name in REGIONS:
            for color in COLORS:
                fleets.destroy(NEW_APP, name, color, force=True)
        (TEST_APPS / f"{NEW_APP}.yaml").unlink(missing_ok=True)
        for record in (TEST_STATE / "production").glob(f"*/{NEW_APP}.json"):
            record.unlink()
