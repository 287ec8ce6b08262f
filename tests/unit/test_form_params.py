"""A trigger form shared by many DAGs is checked by Airflow once per process, and set on each."""

from __future__ import annotations

from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, Asset, Param

from immutable.form_params import set_shared_form


def form(version: str) -> dict[str, Param]:
    return {"version": Param(version, type="string", pattern=r"^$|^\d+\.\d+\.\d+$"), "note": Param("", type="string")}


def scheduled(dag_id: str) -> DAG:
    # Airflow checks params only on a DAG that can be scheduled
    return DAG(dag_id, schedule=[Asset("form-test")], start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))


def test_the_same_form_is_checked_once_and_every_dag_gets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    resolve = Param.resolve

    def counted(self: Param, *args: Any, **kwargs: Any) -> Any:
        checked.append(str(self.value))
        return resolve(self, *args, **kwargs)

    monkeypatch.setattr(Param, "resolve", counted)
    dags = [scheduled(f"form_{n}") for n in range(3)]
    for dag in dags:
        set_shared_form(dag, form("1.2.3"))
    assert checked.count("1.2.3") == 1
    for dag in dags:
        assert dag.params.validate() == {"version": "1.2.3", "note": ""}


def test_a_form_whose_default_does_not_fit_is_refused_every_time() -> None:
    for n in range(2):
        with pytest.raises(ValueError, match="form_bad"):
            set_shared_form(scheduled(f"form_bad_{n}"), form("not-a-version"))
