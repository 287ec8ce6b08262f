"""
One `release_<app>` DAG per app spec in `include/apps/<app>.yaml`.

A spec that does not validate becomes an import error of this file naming the spec's file and
field; the other apps' DAGs still load.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, TaskGroup

from immutable.app_spec import FORM_GIT_REF, SEMVER, AppSpec
from immutable.assets import BASE_CANDIDATE, BASE_STABLE, release_asset
from immutable.config import ConfigError, PlatformConfig, load_platform
from immutable.dag_specs import specs_to_build
from immutable.form_params import set_shared_form
from immutable.notifications import notifiers_for
from immutable.operators.checks import StagingTestOperator
from immutable.operators.fleets import (
    CreateEnvironmentOperator,
    FlipAllOperator,
    FlipOperator,
    LaunchNewColorOperator,
    PrepareCanaryOperator,
)
from immutable.operators.gates import CanaryGateOperator, PostFlipGateOperator
from immutable.operators.images import BakeOperator
from immutable.operators.region_copy import CopyToRegionOperator
from immutable.rollout import plan_rollout
from immutable.shared_tasks import shared_task

RELEASE_DOC = """
### release_{app}: package, bake, sign, test, copy, canary, blue/green, rollback

Turns `{app}` at a version into one immutable, signed image on the **{tier}** tier's base
(`base-image/{channel}`), proves it in dev and staging, and copies it by digest to every region
({regions}). Bake once, copy everywhere: every region holds the very same digest.

Then production, {rollout}: in the pilot region a canary is judged against a freshly launched
baseline on live metrics; each region launches the new color, flips its load balancer to it and
watches it with a post-flip gate. Any failed gate flips every region this run touched back to
the previous color and removes the new fleets; the run fails with the reason.

Trigger with a **version** (semantic version). Left empty, as in runs scheduled by a new
`base-image/{channel}`, it re-releases the version in production on the new base.

Spec: `include/apps/{app}.yaml`. Failures say what failed, with which values, and what to do.
"""


def release_form() -> dict[str, Param]:
    """The trigger form. Set on the DAG once its tasks exist: Airflow deep-copies a DAG's params into
    every task created after them (a third of this file's parse with hundreds of apps, measured by
    bench/dag_parse.py), and a running task gets the DAG's params merged under its own in any case."""
    return {
        "version": Param(
            "",
            type="string",
            pattern=f"^$|{SEMVER}",
            maxLength=64,
            title="Version",
            description="Semantic version to release, such as 1.2.0. Empty: re-release the production version.",
        ),
        "ref": Param(
            "",
            type="string",
            pattern=FORM_GIT_REF,
            maxLength=200,
            title="Git ref",
            description="Branch, tag or commit, for apps built from a git URL. Empty: the spec's ref.",
        ),
        "note": Param("", type="string", maxLength=500, title="Note", description="Why this release (free text)."),
    }


# The tasks are made once per file, not once per app (immutable/shared_tasks.py says why); what
# differs between apps comes in as their arguments. The teardowns are marked where each DAG uses
# them (`as_teardown`): Airflow's @teardown task cannot be called twice.


@shared_task()
def validate(app: str, tier: str, **context: Any) -> dict[str, Any]:
    """Check the spec and the trigger before anything is built; pin the base image by digest."""
    from immutable.pipelines import release

    events = context.get("triggering_asset_events") or {}
    try:
        base_events = [dict(e.extra) for e in events[base_channel(tier)]]
    except (KeyError, TypeError):
        base_events = []
    try:
        return release.validate(app, dict(context["params"]), base_events, context["dag_run"].run_after)
    except release.NothingToRelease as exc:
        from airflow.sdk.exceptions import AirflowSkipException

        release.log.warning("nothing to release: %s", exc)  # Airflow does not log a skip's message
        raise AirflowSkipException(str(exc)) from exc


@shared_task()
def package(plan: dict[str, Any]) -> dict[str, Any]:
    """Build the wheel hermetically in a container from the base image; record its sha256."""
    from immutable.pipelines import release

    return release.package(plan)


@shared_task()
def sign(baked: dict[str, Any]) -> dict[str, Any]:
    """Sign the digest and its provenance (ed25519); every later deploy step verifies it."""
    from immutable.pipelines import release

    return release.sign(baked)


@shared_task()
def dev_test(plan: dict[str, Any], environment: dict[str, str]) -> list[dict[str, Any]]:
    """Wait for health, then run the spec's smoke checks (HTTP status and body)."""
    from immutable.pipelines import release

    return release.dev_test(plan, environment)


@shared_task()
def destroy_dev_env(app: str, **context: Any) -> list[str]:
    """Remove the dev environment, whatever happened in it."""
    from immutable.pipelines import release

    return release.destroy_environment("dev", app, context["run_id"])


@shared_task()
def destroy_staging_env(app: str, **context: Any) -> list[str]:
    """Remove the staging environment, whatever happened in it."""
    from immutable.pipelines import release

    return release.destroy_environment("staging", app, context["run_id"])


@shared_task()
def summarize(plan: dict[str, Any], baked: dict[str, Any], copies: list[dict[str, Any]]) -> dict[str, Any]:
    """Check every region holds the same digest before production is touched."""
    from immutable.pipelines import release

    return release.summarize(plan, baked, list(copies))


@shared_task()
def retire_expired(baked: dict[str, Any], app: str, regions: list[str]) -> dict[str, list[str]]:
    """Retire old colors whose rollback window is over (never waits for one still open), then
    old images nothing needs (never this release's)."""
    from immutable.pipelines import production

    return production.retire_expired(app, list(regions), releasing=str(baked["digest"]))


@shared_task()
def end_canary(app: str, region: str) -> dict[str, Any]:
    """Give the pilot's traffic back to production and remove canary and baseline, pass or fail."""
    from immutable.pipelines import production

    return production.end_canary(app, region)


@shared_task(trigger_rule="one_failed", retries=0)
def rollback(plan: dict[str, Any], baked: dict[str, Any], **context: Any) -> dict[str, str]:
    """After any failure: flip back every region this run flipped; remove its new fleets."""
    from immutable.pipelines import production

    return production.rollback_release(plan, baked, context["run_id"])


@shared_task()
def release_leases(app: str, regions: list[str], **context: Any) -> list[str]:
    """Let the next release or rollback change this app's traffic (a teardown: always runs,
    and does not decide the run's state, which the release and rollback tasks do)."""
    from immutable.pipelines import production

    return production.release_leases(app, list(regions), context["run_id"])


@shared_task()
def record_release(plan: dict[str, Any], baked: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Read back what runs where; the release's outcome as XCom and as an Asset event."""
    from immutable.pipelines import production

    outcome = production.record_release(plan, baked)
    context["outlet_events"][release_asset(plan["app"])].extra = {
        "version": outcome["version"],
        "digest": outcome["digest"],
        "base_digest": plan["base"]["digest"],
        "regions": sorted(outcome["regions"]),
    }
    return outcome


def base_channel(tier: str) -> Asset:
    """The base image channel an app of this tier is released on: canary-tier apps try candidates."""
    return BASE_CANDIDATE if tier == "canary" else BASE_STABLE


def release_dag(spec: AppSpec, platform: PlatformConfig) -> DAG:
    channel_asset = base_channel(spec.tier)
    app = spec.name
    regions = spec.rollout_regions(platform)
    waves = spec.rollout_waves(platform)
    synchronized = spec.is_synchronized(platform)
    rollout = (
        f"a canary in the pilot {waves[0][0]}, then one synchronized flip of all regions"
        if synchronized
        else "wave by wave: " + " then ".join("+".join(w) for w in waves)
    )
    with DAG(
        dag_id=f"release_{app}",
        schedule=[channel_asset],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["release", f"app:{app}", f"tier:{spec.tier}"],
        doc_md=RELEASE_DOC.format(
            app=app,
            tier=spec.tier,
            channel=channel_asset.name.split("/")[-1],
            regions=", ".join(regions),
            rollout=rollout,
        ),
        default_args={
            "retries": 1,
            "retry_delay": pendulum.duration(seconds=15),
            # The task that failed tells why: its error is the notice's cause.
            "on_failure_callback": notifiers_for("release_failed", platform.notifications),
        },
    ) as dag:
        plan = validate(app, spec.tier)
        baked = BakeOperator(
            task_id="bake",
            plan=plan,
            packaged=package(plan),
            doc_md="Install the package onto the base pinned by digest, with provenance labels (local: Docker "
            "build, pushed by digest; aws: an AMI from a builder instance, waited for in the triggerer).",
        ).output
        signed = sign(baked)

        dev_env = CreateEnvironmentOperator(
            task_id="create_dev_env",
            kind="dev",
            plan=plan,
            baked=baked,
            doc_md="Start the image in an isolated network as the dev environment (aws: an instance, its "
            "status checks waited for in the triggerer).",
        ).as_setup()
        signed >> dev_env
        dev_checked = dev_test(plan, dev_env.output)
        dev_checked >> destroy_dev_env(app).as_teardown()

        staging_env = CreateEnvironmentOperator(
            task_id="create_staging_env",
            kind="staging",
            plan=plan,
            baked=baked,
            doc_md="Start the same digest in a staging environment with the staging config (aws: an "
            "instance, its status checks waited for in the triggerer).",
        ).as_setup()
        dev_checked >> staging_env
        staging_checked = StagingTestOperator(
            task_id="staging_test",
            plan=plan,
            environment=staging_env.output,
            doc_md="Run the spec's staging test command against the app in staging (aws: on the instance over "
            "SSM, its agent and the command waited for in the triggerer).",
        )
        staging_checked >> destroy_staging_env(app).as_teardown()

        copies = CopyToRegionOperator.partial(
            task_id="copy_to_region",
            plan=plan,
            baked=baked,
            retries=0,  # the copy retries with backoff itself; see copy.attempts in include/platform.yaml
            map_index_template="{{ task.region }}",
            doc_md="Copy the signed image to one region (local: missing blobs only; aws: AMI copy, waited for "
            "in the triggerer); verify its signature there.",
        ).expand(region=regions)
        staging_checked >> copies
        copied = summarize(plan, baked, copies.output)

        retired = retire_expired(baked, app, regions)
        copied >> retired
        with TaskGroup("canary") as canary_group:
            canary = PrepareCanaryOperator(
                task_id="prepare_canary",
                plan=plan,
                baked=baked,
                doc_md="Launch the canary (new image) and a fresh baseline (production image); once both are "
                "healthy (aws: waited for in the triggerer), each takes its share of the pilot's traffic.",
            )
            gate = CanaryGateOperator(
                task_id="analysis",
                app=app,
                region=waves[0][0],
                canary=canary.output,
                doc_md="Judge canary against baseline every interval (Mann-Whitney per metric, Kayenta scoring).",
            )
            gate >> end_canary(app, waves[0][0]).as_teardown(setups=canary)
        retired >> canary_group

        production_tasks: list[Any] = [gate]
        flip_task_ids: list[str] = []  # the flips before each step, for the approval's summary
        previous: Any = gate
        approval_timeout_s = spec.for_platform(platform).bluegreen.approval_timeout_s
        if spec.canary.on_marginal == "ask":
            from immutable.operators.approval import MarginalCanaryApprovalOperator

            approve_canary = MarginalCanaryApprovalOperator(
                task_id="approve_marginal_canary",
                app=app,
                timeout_s=approval_timeout_s,
                doc_md="Only after a marginal canary (canary.on_marginal: ask): a human sees the score tables and "
                "approves the release or stops it; no answer within approval_timeout_s stops it. Otherwise it "
                "ends at once.",
            )
            gate >> approve_canary
            production_tasks.append(approve_canary)
            previous = approve_canary
        for step in plan_rollout(waves, synchronized=synchronized, approval=spec.approval):
            if step.approval_before:
                from immutable.operators.approval import RolloutApprovalOperator

                approve_rollout = RolloutApprovalOperator(
                    task_id="approve_rollout",
                    app=app,
                    regions=step.regions,
                    timeout_s=approval_timeout_s,
                    previous_flips=flip_task_ids,
                    doc_md="A human approves before the rollout goes on to the next regions; a rejection, or no "
                    "answer within the spec's approval_timeout_s, fails the run and the rollback sends back every "
                    "region this run flipped.",
                )
                previous >> approve_rollout
                production_tasks.append(approve_rollout)
                previous = approve_rollout
            with TaskGroup(step.name, tooltip=", ".join(step.regions)) as group:
                launched = LaunchNewColorOperator.partial(
                    task_id="launch_new_color",
                    plan=plan,
                    baked=baked,
                    retries=0,
                    map_index_template="{{ task.region }}",
                    doc_md="Start the new color at full size on the new digest; healthy before any traffic "
                    "(aws: waited for in the triggerer).",
                ).expand(region=list(step.regions))
                flipped = (
                    FlipAllOperator(
                        task_id="flip_all",
                        plan=plan,
                        launched=launched.output,
                        retries=1,  # safe, as for the `flip` task: every step sets absolute shares
                        doc_md="Synchronized rollout: once every new color is up and healthy, move every region's "
                        "weights in lockstep (all regions at each step). XCom `skew_s`: seconds between the first and "
                        "the last region reaching 100%.",
                    ).output
                    if step.synchronized
                    else FlipOperator.partial(
                        task_id="flip",
                        plan=plan,
                        retries=1,  # safe: every step sets absolute shares (see FlipOperator)
                        doc_md="Move the load balancer's weight to the new color (in steps); the old color stays, "
                        "idle. Between steps the new color's health (aws: waited for in the triggerer).",
                    )
                    .expand(launched=launched.output)
                    .output
                )
                gates = PostFlipGateOperator.partial(
                    task_id="post_flip_gate", app=app, doc_md="Threshold gate on the new color after the flip."
                ).expand(flipped=flipped)
            previous >> group
            production_tasks += [launched, flipped, gates]
            flip_task_ids.append(f"{step.name}.{'flip_all' if step.synchronized else 'flip'}")
            previous = group

        recorded = record_release.override(outlets=[release_asset(app)])(plan, baked)
        previous >> recorded
        undo = rollback.override(on_success_callback=notifiers_for("rolled_back", platform.notifications))(plan, baked)
        production_tasks >> undo
        [recorded, undo] >> release_leases(app, regions).as_teardown()
    set_shared_form(dag, release_form())  # its defaults pass its schema: tests/dags checks it
    return dag


def invalid_specs_dag(errors: dict[str, str]) -> DAG:
    """A DAG whose validation fails with the spec errors, so they show as this file's import error."""
    message = "invalid app spec(s) in include/apps/:\n" + "\n".join(errors.values())

    class InvalidAppSpecs(DAG):
        def validate(self) -> None:
            raise ConfigError(message)

    return InvalidAppSpecs(
        dag_id="invalid_app_specs", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")
    )


_platform = load_platform()
_specs, _errors = specs_to_build("release_")  # in a task's process: its own app only
for _spec in _specs.values():
    try:
        globals()[f"release_{_spec.name}"] = release_dag(_spec, _platform)
    except ConfigError as exc:
        _errors[f"{_spec.name}.yaml"] = str(exc)
if _errors:
    invalid_app_specs = invalid_specs_dag(_errors)
