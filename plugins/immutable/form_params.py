"""A trigger form shared by many DAGs, checked once per process.

Airflow checks a scheduled DAG's params when they are set: one jsonschema check per param (the
schema itself checked against its meta-schema first), per DAG. Hundreds of release DAGs share the
same form with the same defaults, so the same checks ran hundreds of times in every parse (about
a sixth of `dags/releases.py` with 200 apps, measured by bench/dag_parse.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from airflow.sdk.definitions.param import ParamsDict

if TYPE_CHECKING:
    from airflow.sdk import DAG, Param

_CHECKED: set[str] = set()  # forms (schemas and defaults, as JSON) Airflow has accepted in this process


def set_shared_form(dag: DAG, form: dict[str, Param]) -> None:
    """Set `form` as the DAG's params. The first time a form is seen, Airflow checks it as usual (and
    refuses defaults that do not fit their schema, naming the DAG); the same form again is set
    without repeating a check whose answer cannot change."""
    key = json.dumps([(name, param.schema, param.value) for name, param in form.items()], sort_keys=True, default=repr)
    if key not in _CHECKED:
        dag.params = ParamsDict(form)
        _CHECKED.add(key)
        return
    object.__setattr__(dag, "params", ParamsDict(form))  # as Airflow's own converter sets it, unchecked
