"""
### base_image: the base every app image is baked on

Rebuilds the base image from the upstream distribution image: all security updates,
unneeded packages removed, hardened (`include/base/scripts/`), network tuned, common
libraries added. Publishes it to the build registry as a new monotonic version and moves
the **candidate** channel to it, which emits the Asset `base-image/candidate` that
canary-tier apps release on.

- Runs **weekly** by itself; when nothing changed upstream and the candidate has no
  pending upgrades, everything after `check_updates` is skipped (the reason is in its log).
- Trigger it by hand the day a vulnerability is announced: reason `security`, the CVE ids,
  and `force` to rebuild even when the archive shows nothing new yet.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from immutable.assets import BASE_CANDIDATE
from immutable.notifications import notifiers_for
from immutable.operators.checks import BaseChecksOperator, UpgradeProbeOperator
from immutable.operators.images import BuildBaseOperator

CVE_PATTERN = r"^CVE-\d{4}-\d{4,}$"


@dag(
    dag_id="base_image",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["base-image", "immutable"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "reason": Param(
            "weekly",
            type="string",
            enum=["weekly", "security", "manual"],
            title="Reason",
            description="Why this rebuild: the weekly schedule, a security fix, or another manual rebuild.",
        ),
        "cves": Param(
            [],
            type="array",
            items={"type": "string", "pattern": CVE_PATTERN, "maxLength": 32},
            maxItems=200,
            title="CVE ids",
            description="Vulnerabilities this rebuild fixes, such as CVE-2026-12345 (one per line).",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description="Rebuild even when the upstream image and the candidate's packages are unchanged.",
        ),
        "fast_track": Param(
            False,
            type="boolean",
            title="Fast track",
            description="Only with reason security: skip the canary-tier trial and reach critical apps at once.",
        ),
    },
)
def base_image() -> None:
    @task(multiple_outputs=False)
    def resolve_upstream(**context: Any) -> dict[str, Any]:
        """Validate the trigger, find the upstream distribution image and its digest."""
        from immutable.pipelines import base_image as steps

        return steps.resolve_upstream(dict(context["params"]))

    @task.short_circuit(multiple_outputs=False)
    def check_updates(upstream: dict[str, Any], probed: dict[str, Any], **context: Any) -> dict[str, Any] | None:
        """Rebuild only if the upstream changed, the candidate has pending upgrades, or force is set."""
        from immutable.pipelines import base_image as steps

        return steps.check_updates(upstream, probed, context["dag_run"].run_after)

    @task(multiple_outputs=False)
    def record_manifest(built: dict[str, Any]) -> dict[str, Any]:
        """Record every installed package and version as JSON, and log the provenance labels."""
        from immutable.pipelines import base_image as steps

        return steps.record_manifest(built)

    @task(multiple_outputs=False)
    def verify_cves(upstream: dict[str, Any], built: dict[str, Any]) -> dict[str, Any]:
        """A security rebuild proves its fixes against Debian's security tracker, or nothing is published."""
        from immutable.pipelines import base_image as steps

        return steps.verify_cves(upstream, built)

    @task(multiple_outputs=False, outlets=[BASE_CANDIDATE], on_success_callback=notifiers_for("base_published"))
    def publish(
        upstream: dict[str, Any],
        built: dict[str, Any],
        manifest: dict[str, Any],
        verified: dict[str, Any],
        **context: Any,
    ) -> dict[str, Any]:
        """Push by digest, move the candidate tag, emit base-image/candidate with digest, version and
        the CVE ids verified."""
        from immutable.pipelines import base_image as steps

        result = steps.publish(upstream, built, manifest, verified)
        context["outlet_events"][BASE_CANDIDATE].extra = result
        return result

    upstream = resolve_upstream()
    probed = UpgradeProbeOperator(
        task_id="probe_upgrades",
        upstream=upstream,
        doc_md="When the upstream is the candidate's own (and no rebuild is forced), list the candidate's "
        "packages with an upgrade in the archive now (local: a container; aws: a probe instance of the AMI, its "
        "agent and listing waited for in the triggerer).",
    ).output
    plan = check_updates(upstream, probed)
    built = BuildBaseOperator(
        task_id="build",
        upstream=upstream,
        plan=plan,
        doc_md="Build the image: security updates, package removal, hardening, sysctl, common libraries "
        "(local: Docker build; aws: an AMI from a builder instance, waited for in the triggerer).",
    ).output
    checks = BaseChecksOperator(
        task_id="test",
        built=built,
        doc_md="Check every promise of the image; a failing check names itself (local: containers from "
        "the image; aws: a test instance of the AMI, its agent and checks waited for in the triggerer).",
    )
    manifest = record_manifest(built)
    checks >> manifest
    verified = verify_cves(upstream, built)
    manifest >> verified
    publish(upstream, built, manifest, verified)


base_image()
