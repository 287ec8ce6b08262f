"""Parse one DAG file the way the dag-processor does, with the network and connections cut off.

Run as a subprocess by the integrity test, so the modules it reports are those this file alone
pulled in. Prints one JSON object.
"""

from __future__ import annotations

import json
import socket
import sys

HEAVY_MODULES = ("docker", "httpx", "scipy", "boto3", "botocore", "cryptography.hazmat.primitives.asymmetric")


class NetworkAtParseTime(RuntimeError):
    pass


def _refuse(*args: object, **kwargs: object) -> None:
    raise NetworkAtParseTime(f"network access at parse time: {args!r}")


def main(path: str) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook

    socket.socket.connect = _refuse  # type: ignore[method-assign]
    socket.create_connection = _refuse  # type: ignore[assignment]
    BaseHook.get_connection = classmethod(_refuse)  # type: ignore[method-assign, assignment]
    before = set(sys.modules)
    bag = DagBag(dag_folder=path)
    loaded = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in {h.split(".")[0] for h in HEAVY_MODULES})
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY_MODULES)]
    print(
        json.dumps(
            {
                "dag_ids": sorted(bag.dag_ids),
                "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
                "heavy_modules": heavy,
                "dags": {
                    dag_id: {
                        "schedule": str(getattr(dag, "timetable", None).__class__.__name__),
                        "catchup": dag.catchup,
                        "tags": sorted(dag.tags),
                        "doc_md": bool(dag.doc_md),
                        "start_date_tz": str(dag.start_date.tzinfo) if dag.start_date else None,
                        "tasks_without_doc": [t.task_id for t in dag.tasks if not (t.doc_md or t.doc)],
                        "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
                    }
                    for dag_id, dag in bag.dags.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
