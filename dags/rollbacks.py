"""
One `rollback_<app>` DAG per app spec: put the previous release back in the chosen regions. And one
`stop_<app>`: stop the app's release in progress, from the UI's trigger form or REST.

While the previous color is still kept (its rollback window), this is a flip of the load
balancer back to it: seconds. After the window it redeploys the previous release's image by
digest with the same blue/green steps, and watches it with the same post-flip gate as a release
(a breach fails the run and changes nothing: the release rolled back from is not put back).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from immutable.app_spec import AppSpec
from immutable.config import ConfigError, PlatformConfig, load_platform
from immutable.dag_specs import specs_to_build
from immutable.notifications import notifiers_for
from immutable.operators.fleets import RollbackRegionOperator
from immutable.operators.gates import PostFlipGateOperator


def _triggered_by_hand(kind: str, app: str, doc_md: str, params: dict[str, Param]) -> DAG:
    """A `<kind>_<app>` DAG that runs only when triggered, one run at a time."""
    return DAG(
        dag_id=f"{kind}_{app}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=[kind, f"app:{app}"],
        doc_md=doc_md,
        params=params,
    )


def rollback_dag(spec: AppSpec, platform: PlatformConfig) -> DAG:
    app, regions = spec.name, spec.rollout_regions(platform)
    with _triggered_by_hand(
        "rollback",
        app,
        __doc__ or "",
        {
            "regions": Param(
                regions,
                type="array",
                items={"type": "string", "enum": regions},
                minItems=1,
                title="Regions",
                description=f"Where to put the previous release back. Allowed: {', '.join(regions)}.",
            ),
            "reason": Param("", type="string", maxLength=500, title="Reason", description="Why (free text)."),
        },
    ) as dag:

        @task(multiple_outputs=False)
        def choose_regions(**context: Any) -> list[str]:
            """Validate the chosen regions against the app's rollout regions."""
            chosen = list(dict.fromkeys(context["params"]["regions"]))
            unknown = sorted(set(chosen) - set(regions))
            if unknown:
                raise ConfigError(f"rollback trigger: field 'regions': {unknown} are not regions of {app}: {regions}")
            return chosen

        @task(multiple_outputs=False, on_success_callback=notifiers_for("rolled_back", platform.notifications))
        def redeployed(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
            """The regions past their window, where the previous release was launched anew: watched."""
            from immutable.pipelines.production import REDEPLOYED

            return [outcome["to"] for outcome in outcomes if outcome["how"] == REDEPLOYED]

        outcomes = (
            RollbackRegionOperator.partial(
                task_id="rollback_region",
                app=app,
                retries=0,
                map_index_template="{{ task.region }}",
                doc_md="Flip back to the kept color, or redeploy the previous release by digest (its fleet waited for "
                "in the triggerer on aws).",
            )
            .expand(region=choose_regions())
            .output
        )
        PostFlipGateOperator.partial(
            task_id="post_flip_gate",
            app=app,
            flip_back=False,
            doc_md="The post-flip gate on a redeployed previous release; a breach fails the run, nothing is flipped.",
        ).expand(flipped=redeployed(outcomes))
    return dag


STOP_DOC = """
### stop_{app}: stop the release of {app} in progress

Every release of {app} asked for before this run stops: its gates within seconds (the task log
says who stopped it and why), its launches and flips before their next change. The release then
fails, and its `rollback` task flips back every region it flipped and removes its new fleets.
This run waits for that, then says what runs in each region.

A release run **marked failed** by hand skips its rollback task: this DAG is then triggered for
it (by the project's listener), and it undoes what that run changed itself.
"""
STOP_WAIT_S = 900.0  # how long the stop waits for the release runs to end (their gates look every few seconds)


def stop_dag(spec: AppSpec, platform: PlatformConfig) -> DAG:
    app, regions = spec.name, spec.rollout_regions(platform)
    with _triggered_by_hand(
        "stop",
        app,
        STOP_DOC.format(app=app),
        {
            "reason": Param(
                type="string",
                minLength=1,
                maxLength=500,
                title="Reason",
                description="Why the release must stop: shown in the release's failure, with your name.",
            ),
            "marked_failed_run": Param(
                None,
                type=["null", "string"],
                title="Release run marked failed",
                description="Set by the project's listener when a release run is marked failed by hand: "
                "the run whose changes this stop undoes. Leave it empty to stop the releases in progress.",
            ),
        },
    ) as dag:

        @task(multiple_outputs=False, retries=0)
        def request_stop(**context: Any) -> dict[str, Any]:
            """Record the stop for every region; name the release runs it stops."""
            from immutable.pipelines import production

            by = context["dag_run"].triggering_user_name or "an unnamed user"
            params = context["params"]
            return production.request_stop(
                app, regions, by=by, reason=str(params["reason"]), marked_failed_run=params.get("marked_failed_run")
            )

        @task(multiple_outputs=False, retries=0, on_success_callback=notifiers_for("stopped", platform.notifications))
        def make_safe(requested: dict[str, Any], **context: Any) -> dict[str, str]:
            """Wait for those runs to end; undo what one that ended without its rollback changed."""
            from immutable.pipelines import production

            def release_digest(run_id: str) -> str | None:
                baked = context["ti"].xcom_pull(dag_id=f"release_{app}", run_id=run_id, task_ids="bake")
                return str(baked["digest"]) if isinstance(baked, dict) and baked.get("digest") else None

            return production.make_safe_after_stop(
                app, regions, requested, release_digest=release_digest, timeout_s=STOP_WAIT_S
            )

        make_safe(request_stop())
    return dag


_platform = load_platform()
_specs, _ = specs_to_build("rollback_", "stop_")  # releases.py reports bad specs as its import error
for _spec in _specs.values():
    try:
        globals()[f"rollback_{_spec.name}"] = rollback_dag(_spec, _platform)
        globals()[f"stop_{_spec.name}"] = stop_dag(_spec, _platform)
    except ConfigError:
        continue
