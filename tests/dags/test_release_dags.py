"""release_<app> DAGs are generated from include/apps/*.yaml; a bad spec is an import error naming it."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dags.test_integrity import parse

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / "dags" / "releases.py"


@pytest.fixture(scope="module")
def dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(RELEASES))
    assert bag.import_errors == {}
    return bag.dags["release_sample"]


def test_one_dag_per_spec(tmp_path: Path) -> None:
    shutil.copy(ROOT / "include" / "apps" / "sample.yaml", tmp_path / "sample.yaml")
    other = yaml.safe_load((tmp_path / "sample.yaml").read_text()) | {"name": "billing", "tier": "critical"}
    (tmp_path / "billing.yaml").write_text(yaml.safe_dump(other))
    result = parse(RELEASES, {"IMMUTABLE_APPS_DIR": str(tmp_path)})
    assert result["import_errors"] == {}
    assert result["dag_ids"] == ["release_billing", "release_sample"]


def test_a_tasks_process_builds_only_its_own_dag(tmp_path: Path) -> None:
    """Airflow's parsing context names the DAG a task's process runs: that app's spec alone is read,
    so a task starts as fast with 200 apps as with one, and another app's broken spec is not its
    problem. Without the context (the dag-processor) every DAG is built."""
    shutil.copy(ROOT / "include" / "apps" / "sample.yaml", tmp_path / "sample.yaml")
    other = yaml.safe_load((tmp_path / "sample.yaml").read_text()) | {"name": "billing", "tier": "critical"}
    (tmp_path / "billing.yaml").write_text(yaml.safe_dump(other))
    (tmp_path / "broken.yaml").write_text("name: broken\ntier: gold\n")
    in_a_task = {"IMMUTABLE_APPS_DIR": str(tmp_path), "_AIRFLOW_PARSING_CONTEXT_DAG_ID": "release_billing"}
    result = parse(RELEASES, in_a_task)
    assert (result["dag_ids"], result["import_errors"]) == (["release_billing"], {})
    rollbacks = parse(
        ROOT / "dags" / "rollbacks.py", in_a_task | {"_AIRFLOW_PARSING_CONTEXT_DAG_ID": "rollback_billing"}
    )
    assert (rollbacks["dag_ids"], rollbacks["import_errors"]) == (["rollback_billing", "stop_billing"], {})
    stops = parse(ROOT / "dags" / "rollbacks.py", in_a_task | {"_AIRFLOW_PARSING_CONTEXT_DAG_ID": "stop_billing"})
    assert (stops["dag_ids"], stops["import_errors"]) == (["rollback_billing", "stop_billing"], {})
    everything = parse(RELEASES, {"IMMUTABLE_APPS_DIR": str(tmp_path)})
    assert everything["dag_ids"] == ["release_billing", "release_sample"]
    assert "broken.yaml" in next(iter(everything["import_errors"].values()))


def test_a_bad_spec_is_an_import_error_naming_file_and_field_and_the_others_load(tmp_path: Path) -> None:
    shutil.copy(ROOT / "include" / "apps" / "sample.yaml", tmp_path / "sample.yaml")
    broken = yaml.safe_load((tmp_path / "sample.yaml").read_text()) | {"name": "broken", "tier": "gold"}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    result = parse(RELEASES, {"IMMUTABLE_APPS_DIR": str(tmp_path)})
    assert result["dag_ids"] == ["release_sample"]
    [(path, message)] = result["import_errors"].items()
    assert path.endswith("releases.py")
    assert "broken.yaml" in message
    assert "field 'tier'" in message


def test_tasks_in_order_with_setup_and_teardown(dag: Any) -> None:
    order = ["validate", "package", "bake", "sign", "create_dev_env", "dev_test", "create_staging_env", "staging_test"]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert dag.get_task("create_dev_env").is_setup
    assert dag.get_task("destroy_dev_env").is_teardown
    assert dag.get_task("destroy_staging_env").is_teardown
    assert "copy_to_region" in dag.get_task("staging_test").downstream_task_ids
    assert dag.max_active_runs == 1


def test_copies_are_mapped_over_the_rollout_regions(dag: Any) -> None:
    copy = dag.get_task("copy_to_region")
    assert copy.expand_input.value["region"] == ["eu-west", "us-east", "ap-south"]


def test_scheduled_on_the_base_asset_of_its_tier(dag: Any) -> None:
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["base-image/candidate"]


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0.0", "latest"])
def test_the_form_refuses_a_bad_version(dag: Any, version: str) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict({k: dag.params.get_param(k) for k in dag.params})
    with pytest.raises(ParamValidationError, match="param version"):
        params.update({"version": version})
        params.validate()


def test_the_form_accepts_a_version_or_nothing(dag: Any) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict({k: dag.params.get_param(k) for k in dag.params})
    assert params.validate()["version"] == ""
    params.update({"version": "1.2.0"})
    assert params.validate()["version"] == "1.2.0"


def spec_variant(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "include" / "apps" / "sample.yaml").read_text()) | changes
    (tmp_path / "sample.yaml").write_text(yaml.safe_dump(data))
    result = parse(RELEASES, {"IMMUTABLE_APPS_DIR": str(tmp_path)})
    assert result["import_errors"] == {}
    return dict(result["dags"]["release_sample"]["downstream"])


def test_waves_run_one_after_the_other_after_the_canary(tmp_path: Path) -> None:
    downstream = spec_variant(tmp_path)
    assert "wave_1.launch_new_color" in downstream["canary.analysis"]
    assert "wave_2.launch_new_color" in downstream["wave_1.post_flip_gate"]
    assert "record_release" in downstream["wave_2.post_flip_gate"]


def test_approval_sits_between_the_pilot_and_the_next_wave(tmp_path: Path) -> None:
    downstream = spec_variant(tmp_path, approval=True)
    assert "approve_rollout" in downstream["wave_1.post_flip_gate"]
    assert "wave_2.launch_new_color" in downstream["approve_rollout"]
    assert "rollback" in downstream["approve_rollout"]


def test_a_spec_that_asks_on_a_marginal_canary_has_the_question_before_the_first_wave(tmp_path: Path) -> None:
    sample = yaml.safe_load((ROOT / "include" / "apps" / "sample.yaml").read_text())
    downstream = spec_variant(tmp_path, canary=sample["canary"] | {"on_marginal": "ask"})
    assert "approve_marginal_canary" in downstream["canary.analysis"]
    assert "wave_1.launch_new_color" in downstream["approve_marginal_canary"]
    assert "rollback" in downstream["approve_marginal_canary"]
    assert "approve_marginal_canary" not in spec_variant(tmp_path)  # on_marginal: fail asks nobody


def test_a_synchronized_rollout_flips_all_regions_in_one_task(tmp_path: Path) -> None:
    downstream = spec_variant(tmp_path, synchronized=True)
    assert not any(task.startswith("wave_") for task in downstream)
    assert downstream["all_regions.launch_new_color"] == ["all_regions.flip_all", "rollback"]
    assert "all_regions.post_flip_gate" in downstream["all_regions.flip_all"]
