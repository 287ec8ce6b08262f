"""
### revoke_image: withdraw a bad image from every future deploy

Form: `kind` (app or base), `app` (for an app image), `reference` (a version such as 1.2.0, or the
image's digest or AMI id) and `reason`. The revocation is recorded on the platform beside the
image, signed with the pipeline's key, with the reason and who triggered the run. From then on every
deploy step refuses the image with that reason, a release whose pinned base is revoked fails at
validate, `promote_base` refuses a revoked candidate, and the Releases page lists a revoked image that
still runs first, with its regions. Nothing is deleted and nothing running is stopped: release a fixed
version (or roll back) to replace it.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from immutable.app_spec import load_app_specs

_apps = sorted(load_app_specs()[0])


@dag(
    dag_id="revoke_image",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["immutable", "revocation"],
    doc_md=__doc__,
    params={
        "kind": Param(
            "app", type="string", enum=["app", "base"], title="Kind", description="An app image or the base."
        ),
        "app": Param(
            _apps[0] if _apps else "",
            type="string",
            enum=["", *_apps],
            title="App",
            description="The app whose image is revoked (kind app); empty for the base.",
        ),
        "reference": Param(
            "",
            type="string",
            minLength=1,
            maxLength=128,
            title="Version or digest",
            description=(
                "The version (1.2.0: its newest build) or the image's digest (sha256:..., or the build-region AMI "
                "id on aws): an older build of a version, re-released on a newer base, is revoked by its digest."
            ),
        ),
        "reason": Param(
            "",
            type="string",
            minLength=3,
            maxLength=500,
            title="Reason",
            description="Why (shown to everyone it stops).",
        ),
    },
)
def revoke_image() -> None:
    @task(multiple_outputs=False)
    def revoke(**context: Any) -> dict[str, Any]:
        """Check the form, find the image and record its signed revocation."""
        from immutable.pipelines.revoke import revoke as record

        run = context["dag_run"]
        revoked_by = getattr(run, "triggering_user_name", None) or "an unnamed trigger (no user was logged in)"
        return record(dict(context["params"]), revoked_by, run.run_after)

    revoke()


revoke_image()
