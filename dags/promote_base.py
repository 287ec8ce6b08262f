"""
### promote_base: a base candidate becomes stable

The canary tier tries a new base first. Once every canary-tier app runs the candidate in
production in all its regions (or at once for a `fast_track` security rebuild), the candidate
is tagged `stable` and `base-image/stable` is emitted, which releases the critical-tier apps on
it. Runs whenever a candidate is published or a canary-tier release finishes; until then it
skips, with the reason in `check_promotion`'s log.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from immutable.app_spec import load_app_specs
from immutable.assets import BASE_CANDIDATE, BASE_STABLE, release_asset
from immutable.notifications import notifiers_for

_canary_tier = sorted(name for name, spec in load_app_specs()[0].items() if spec.tier == "canary")
_schedule: Any = BASE_CANDIDATE
for _name in _canary_tier:
    _schedule = _schedule | release_asset(_name)


@dag(
    dag_id="promote_base",
    schedule=_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["base-image", "immutable"],
    doc_md=__doc__,
)
def promote_base() -> None:
    @task.short_circuit(multiple_outputs=False)
    def check_promotion() -> dict[str, Any] | None:
        """Is the candidate in production on every canary-tier app (or fast-tracked)?"""
        from immutable.pipelines import promote

        return promote.check_promotion()

    @task(multiple_outputs=False, outlets=[BASE_STABLE], on_success_callback=notifiers_for("base_promoted"))
    def promote(plan: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Tag the candidate stable and emit base-image/stable for the critical-tier apps."""
        from immutable.pipelines import promote as steps

        result = steps.promote(plan)
        context["outlet_events"][BASE_STABLE].extra = result
        return result

    promote(check_promotion())


promote_base()
