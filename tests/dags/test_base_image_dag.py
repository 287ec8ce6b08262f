"""The base_image DAG's shape and its trigger form's validation."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "base_image.py"))
    assert bag.import_errors == {}
    return bag.dags["base_image"]


def test_weekly_with_the_expected_tasks_in_order(dag: Any) -> None:
    assert dag.schedule == "@weekly"
    assert dag.max_active_runs == 1
    order = [
        "resolve_upstream",
        "probe_upgrades",
        "check_updates",
        "build",
        "test",
        "record_manifest",
        "verify_cves",
        "publish",
    ]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)


def test_publish_emits_the_candidate_asset(dag: Any) -> None:
    outlets = dag.get_task("publish").outlets
    assert [o.name for o in outlets] == ["base-image/candidate"]


def test_form_defaults_are_a_weekly_rebuild(dag: Any) -> None:
    assert dag.params.validate() == {"reason": "weekly", "cves": [], "force": False, "fast_track": False}


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"reason": "because"}, "reason"),
        ({"cves": ["CVE-26-1"]}, "cves"),
        ({"cves": "CVE-2026-1234"}, "cves"),
        ({"force": "yes"}, "force"),
        ({"fast_track": "no"}, "fast_track"),
    ],
)
def test_form_refuses_bad_values_naming_the_field(dag: Any, conf: dict[str, Any], field: str) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict({k: dag.params.get_param(k) for k in dag.params})
    with pytest.raises(ParamValidationError, match=f"param {field}"):
        params.update(conf)
        params.validate()


def test_form_accepts_a_security_rebuild(dag: Any) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict({k: dag.params.get_param(k) for k in dag.params})
    params.update({"reason": "security", "cves": ["CVE-2026-12345"], "force": True, "fast_track": True})
    assert params.validate()["cves"] == ["CVE-2026-12345"]
