"""revoke_image on the local platform: the DAG records a signed revocation in the build registry,
and from then on deploy steps, validate and promote_base refuse the image, and the Releases page
names it first while it still runs. Each test removes its revocation at the end, since the images
it revokes (what runs now, the base candidate) are the other tests' images too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration.helpers import APP, REGIONS, production, run_dag, xcom

REASON = "leaks session tokens into its logs (INC-4711)"


@pytest.fixture
def unrevoke() -> Iterator[list[tuple[str, str]]]:
    """Images (repository, digest) whose revocation the test made; removed from the registry after it."""
    from immutable.config import load_platform
    from immutable.registry import RegistryClient
    from immutable.signing import revocation_tag

    revoked: list[tuple[str, str]] = []
    yield revoked
    build = RegistryClient(load_platform().build_registry)
    for repository, digest in revoked:
        artifact = build.manifest_digest(repository, revocation_tag(digest))
        if artifact:
            build.delete_manifest(repository, artifact)


def revoke(kind: str, reference: str, app: str = "") -> dict[str, Any]:
    run, states = run_dag(
        "revoke_image.py", "revoke_image", {"kind": kind, "app": app, "reference": reference, "reason": REASON}
    )
    assert str(run.state) == "success", states
    result: dict[str, Any] = xcom(run, "revoke")
    return result


def test_a_revoked_app_image_is_refused_by_every_deploy_step_and_listed_first_while_it_runs(
    two_good_releases: dict[str, Any], unrevoke: list[tuple[str, str]]
) -> None:
    from immutable.app_spec import app_spec
    from immutable.pipelines import production as production_steps
    from immutable.pipelines import release
    from immutable.revocation import RevokedImageError
    from immutable.ui.releases import render_page, what_runs_where

    live = production().live(APP, REGIONS[0])
    assert live is not None
    repository = app_spec(APP).repository
    unrevoke.append((repository, str(live["digest"])))
    record = revoke("app", str(live["version"]), app=APP)
    assert (record["repository"], record["digest"], record["version"]) == (repository, live["digest"], live["version"])
    assert record["reason"] == REASON and record["stored"].endswith(".revoked")

    plan = xcom(two_good_releases["second"], "validate") | {"version": live["version"]}
    baked = {"repository": repository, "digest": live["digest"], "tags": [live["version"]], "labels": {}}
    refusal = f"refusing to deploy the image: .* was revoked by dag_test at .*: {re.escape(REASON)}"
    with pytest.raises(RevokedImageError, match=refusal):
        release.create_environment("dev", plan, baked, "manual__revoked")
    with pytest.raises(RevokedImageError, match=refusal):
        release.copy_to_region(plan, baked, REGIONS[1])
    with pytest.raises(RevokedImageError, match=refusal):
        production_steps.launch_new_color(plan, baked, REGIONS[1], "manual__revoked")
    # Revoked, not removed: what runs it still serves, and the page lists it first with its regions.
    assert production().live(APP, REGIONS[0]) == live
    placements = what_runs_where([APP])
    where = [p.region for p in placements if p.live and p.live["digest"] == live["digest"]]
    page = render_page(placements).split("<body>", 1)[1]
    revoked_part = page.split("<table>", 1)[0]
    assert "Revoked images still running" in revoked_part and REASON in revoked_part
    assert all(f"{APP} in {region}" in revoked_part for region in where) and where

    again = revoke("app", str(live["digest"]), app=APP)  # by digest this time: the first record stays
    assert again["already_revoked"] is True and again["revoked_at"] == record["revoked_at"]

    # A rollback does not flip back onto a revoked image either.
    kept = production().kept(APP, REGIONS[1])
    assert kept is not None
    unrevoke.append((repository, str(kept["digest"])))
    revoke("app", str(kept["digest"]), app=APP)
    before = production().live(APP, REGIONS[1])
    with pytest.raises(RevokedImageError, match=refusal):
        production_steps.start_rollback_region(APP, REGIONS[1], "manual__revoked")
    assert production().live(APP, REGIONS[1]) == before


def test_a_revoked_base_stops_a_release_at_validate_and_promote_base(
    base_candidate: str, unrevoke: list[tuple[str, str]]
) -> None:
    from immutable.app_spec import app_spec
    from immutable.config import load_base_spec
    from immutable.pipelines import promote, release
    from immutable.platforms import platform_for
    from immutable.provenance import LABEL_BASE_DIGEST
    from immutable.revocation import RevokedImageError, deployable

    repository = load_base_spec().repository
    found = platform_for().images.channel(repository, "candidate")
    assert found is not None
    candidate = found[0]
    unrevoke.append((repository, candidate))
    record = revoke("base", candidate)
    assert record["kind"] == "base" and record["digest"] == candidate

    run, states = run_dag("releases.py", f"release_{APP}", {"version": "9.9.0"})
    assert str(run.state) == "failed" and states["validate"] == "failed", states
    assert states.get("bake") != "success", states  # nothing was built
    with pytest.raises(
        RevokedImageError,
        match=f"refusing to release {APP} on its pinned base .* was revoked by dag_test .*: {re.escape(REASON)}",
    ):
        release.validate(APP, {"version": "9.9.0"}, [], datetime.now(UTC))

    run, states = run_dag("promote_base.py", "promote_base", {})
    assert str(run.state) == "failed" and states["check_promotion"] == "failed", states
    with pytest.raises(RevokedImageError, match=f"refusing to promote the candidate base .*: {re.escape(REASON)}"):
        promote.check_promotion()

    # An app image baked on a revoked base runs what was revoked: no step deploys it either.
    live = production().live(APP, REGIONS[0])
    assert live is not None
    under = platform_for().images.verify_in(None, app_spec(APP).repository, str(live["digest"]))[LABEL_BASE_DIGEST]
    if under != candidate:
        unrevoke.append((repository, under))
        revoke("base", under)
    with pytest.raises(RevokedImageError, match=f"refusing to deploy {app_spec(APP).repository}@.*, whose base"):
        deployable(platform_for(), REGIONS[1], app_spec(APP).repository, str(live["digest"]))
