"""Which app specs a DAG file builds DAGs for in this parse.

The dag-processor parses `dags/releases.py` (and `dags/rollbacks.py`) to build every app's DAG. A
task's own process parses the file too before it runs, and needs one DAG only: Airflow's parsing
context names it, so only that app's spec file is read and validated, however many apps there are.
"""

from __future__ import annotations

from airflow.sdk import get_parsing_context

from immutable.app_spec import AppSpec, app_spec, load_app_specs
from immutable.config import ConfigError


def specs_to_build(*dag_prefixes: str) -> tuple[dict[str, AppSpec], dict[str, str]]:
    """The specs (by app name) whose `<prefix><app>` DAGs to build now, and an error per spec file
    that does not validate. A task's process gets its own app's spec alone."""
    wanted = get_parsing_context().dag_id
    prefix = next((p for p in dag_prefixes if wanted is not None and wanted.startswith(p)), None)
    if wanted is None or prefix is None:
        return load_app_specs()
    name = wanted.removeprefix(prefix)
    try:
        return {name: app_spec(name)}, {}
    except ConfigError as exc:
        return {}, {f"{name}.yaml": str(exc)}
