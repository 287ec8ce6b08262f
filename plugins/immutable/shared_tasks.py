"""Task functions made once per DAG file and used by every app's DAG in it.

A DAG file that builds one DAG per app pays Airflow's cost per task made for every app, and with
hundreds of apps that cost is most of the file's parse (bench/dag_parse.py). `shared_task` makes
the task once per file; it says `multiple_outputs` (inferring it evaluates the function's return
annotation again at every DAG), and it works the function's signature out once: Airflow asks
`inspect.signature` for it three times per task made from the function, and `inspect.signature`
returns a function's `__signature__` as it is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from airflow.sdk import task


def shared_task(**task_args: Any) -> Callable[[Callable[..., Any]], Any]:
    """`@task(multiple_outputs=False, **task_args)` for a module-level function used by many DAGs."""

    def make(function: Callable[..., Any]) -> Any:
        function.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
        return task(multiple_outputs=False, **task_args)(function)

    return make
