"""The release_<app> DAGs' task bodies: validate, package, bake, sign, test in dev and staging, copy.

Each takes plain values (from XCom or the task context), reads them into the typed payloads of
`immutable.payloads`, asks the platform (`platform_for`) to do the work, and returns JSON-ready
dicts. Each is safe to run twice: the platform looks before it pushes, and environments have
fixed names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from immutable.app_spec import AppSpec, app_spec, parse_release_params
from immutable.config import ConfigError, load_base_spec
from immutable.naming import environment_name
from immutable.payloads import Baked, BaseRef, Packaged, Plan, RegionCopy
from immutable.platforms import platform_for
from immutable.platforms.interface import Platform
from immutable.provenance import LABEL_BASE_DIGEST, LABEL_VERSION, app_labels
from immutable.revocation import deployable, refuse_revoked

log = logging.getLogger(__name__)


class ReleaseError(RuntimeError):
    pass


class NothingToRelease(ReleaseError):
    """A run scheduled by a new base image with nothing to re-release on it: skip, not fail."""


def base_channel(spec: AppSpec) -> str:
    return "candidate" if spec.tier == "canary" else "stable"


def bases_in_production(platform: Platform, spec: AppSpec) -> dict[str, str | None]:
    """Per region of the app's rollout, the digest of the base under its live image (None: nothing
    live), read from the image's verified provenance: every region runs a copy of the same build."""
    bases: dict[str, str | None] = {}
    for region in spec.rollout_regions(platform.config):
        live = platform.production.live(spec.name, region)
        labels = platform.images.verify_in(region, spec.repository, str(live["digest"])) if live else {}
        bases[region] = labels.get(LABEL_BASE_DIGEST)
    return bases


def validate(
    app: str,
    params: dict[str, Any],
    base_events: list[dict[str, Any]],
    run_after: datetime,
) -> dict[str, Any]:
    """Check the spec, the trigger and the inputs before anything is built; pin the base by digest."""
    spec = app_spec(app)
    release = parse_release_params(params)
    platform, base_spec = platform_for(), load_base_spec()
    if release.ref and spec.source.git is None:
        raise ConfigError(
            f"release trigger: field 'ref': '{release.ref}' was given but app '{app}' builds from the repo folder "
            f"'{spec.source.path}', which has no refs; leave ref empty"
        )
    regions = spec.rollout_regions(platform.config)
    channel = base_channel(spec)
    if base_events:
        event = base_events[-1]
        base_digest, base_version = str(event["digest"]), str(event["version"])
        log.info("triggered by base-image/%s %s (%s)", channel, base_version, base_digest)
    else:
        found = platform.images.channel(base_spec.repository, channel)
        if found is None:
            raise ReleaseError(
                f"there is no base image on the '{channel}' channel in {platform.images.build_location()} yet, "
                f"which {spec.tier}-tier apps build on; "
                + ("run the base_image DAG first" if channel == "candidate" else "run promote_base first")
            )
        base_digest, labels = found
        base_version = labels.get(LABEL_VERSION, "unknown")
    refuse_revoked(
        platform, base_spec.repository, base_digest, refusing=f"to release {app} on its pinned base {base_version}"
    )

    version = release.version
    rereleased = False
    if not version:
        pilot = regions[0]
        live = platform.production.live(app, pilot)
        if live is None and base_events:
            raise NothingToRelease(
                f"a new base image arrived, but {app} runs nothing in {pilot} yet, so there is nothing to "
                "re-release on it; the first release (with a version) will use this base"
            )
        if live is None:
            raise ConfigError(
                f"release trigger: field 'version' is empty, which re-releases the version in production, but "
                f"{app} runs nothing in {pilot} yet; give a version such as 1.0.0"
            )
        version = str(live["version"])
        if base_events and set(bases_in_production(platform, spec).values()) == {base_digest}:
            raise NothingToRelease(
                f"{app} already runs {version} on base {base_version} ({base_digest}) in every region; "
                "nothing to re-release"
            )
        rereleased = True
        log.info("re-releasing %s %s (in production) on base %s", app, version, base_version)
    plan = Plan(
        app=app,
        version=version,
        rereleased=rereleased,
        ref=release.ref,
        note=release.note,
        regions=regions,
        waves=spec.rollout_waves(platform.config),
        repository=spec.repository,
        base=BaseRef(repository=base_spec.repository, digest=base_digest, version=base_version, channel=channel),
        created=run_after.isoformat(),
    ).dump()
    log.info("release plan:\n%s", json.dumps(plan, indent=2))
    return plan


def package(plan: dict[str, Any]) -> dict[str, Any]:
    """Build the wheel from the app's source; store it as an artifact; record its sha256."""
    release, spec = Plan.of(plan), app_spec(plan["app"])
    packaged = platform_for().images.package(plan=release, spec=spec, uid=load_base_spec().runtime_user.uid)
    log.info(
        "packaged %s %s: %s (%s), stored as %s",
        spec.name,
        release.version,
        packaged.wheel,
        packaged.sha256,
        packaged.artifact,
    )
    return packaged.dump()


def bake(plan: dict[str, Any], packaged: dict[str, Any], run_id: str, *, wait: bool = True) -> dict[str, Any]:
    """Install the package onto the base pinned by digest; label with provenance; push by digest.

    With `wait=False` a platform whose images take long to make may answer "pending": the task
    defers until the image is done (`operators.images.BakeOperator`), then calls `finish_bake`."""
    release, spec, images = Plan.of(plan), app_spec(plan["app"]), platform_for().images
    labels = app_labels(
        version=release.version,
        created=release.created,
        app=spec.name,
        base_name=images.base_name(release.base.repository, release.base.version),
        base_digest=release.base.digest,
        base_version=release.base.version,
        packaged=Packaged.of(packaged),
        run_id=run_id,
    )
    baked = images.bake(
        plan=release, spec=spec, packaged=Packaged.of(packaged), labels=labels, run_id=run_id, wait=wait
    )
    if baked.pending:
        log.info("baking %s %s as %s; waiting for it in the triggerer", spec.name, release.version, baked.digest)
        return baked.dump()
    log.info("baked %s %s as %s@%s", spec.name, release.version, baked.repository, baked.digest)
    return baked.dump()


def finish_bake(baked: dict[str, Any]) -> dict[str, Any]:
    """After a wait of a bake in the triggerer: the image, done; a bake still pending (its next
    wait: the builder's script, then the image); or an error saying why."""
    done = platform_for().images.finish_bake(Baked.of(baked))
    log.info("%s %s as %s", "baking" if done.pending else "baked", done.repository, done.digest or "(no image yet)")
    return done.dump()


def sign(baked: dict[str, Any]) -> dict[str, Any]:
    """Sign digest + provenance with the pipeline's key; store the signature beside the image."""
    from immutable.signing import SignatureError

    image, images = Baked.of(baked), platform_for().images
    try:
        images.verify_in(None, image.repository, image.digest)
        log.info("%s@%s is already signed with our key", image.repository, image.digest)
        return {"digest": image.digest, "signature_tag": "(already signed)"}
    except SignatureError:
        pass
    name = images.sign(image)
    images.verify_in(None, image.repository, image.digest)
    log.info("signed %s@%s (signature %s)", image.repository, image.digest, name)
    return {"digest": image.digest, "signature_tag": name}


def create_environment(
    kind: str, plan: dict[str, Any], baked: dict[str, Any], run_id: str, *, wait: bool = True
) -> dict[str, str]:
    """Start the dev or staging environment on the image. With `wait=False` a platform whose
    environments take minutes to come up returns at once: the caller waits (`pending_environment`)."""
    spec, platform, image = app_spec(plan["app"]), platform_for(), Baked.of(baked)
    deployable(platform, None, image.repository, image.digest)
    name = environment_name(kind, spec.name, run_id)
    made = platform.environments.create(kind=kind, name=name, spec=spec, image=image, run_id=run_id, wait=wait)
    log.info("%s environment %s: %s from %s", kind, name, platform.environments.describe(made), image.digest)
    return made


def pending_environment(environment: dict[str, str]) -> tuple[Any, float] | None:
    """What a started environment still waits for (a trigger and its timeout), or None once it is up."""
    waiter: tuple[Any, float] | None = platform_for().environments.pending_create(environment)
    return waiter


def _check_table(results: list[dict[str, Any]]) -> str:
    return "\n".join(f"{'PASS' if r['passed'] else 'FAIL'}  {r['check']:<20} {r['detail']}" for r in results)


def dev_test(plan: dict[str, Any], environment: dict[str, str]) -> list[dict[str, Any]]:
    spec, environments = app_spec(plan["app"]), platform_for().environments
    results = environments.smoke_checks(environment, spec=spec, checks=spec.dev.smoke_checks, version=plan["version"])
    table = _check_table(results)
    log.info("dev smoke checks of %s %s:\n%s", spec.name, plan["version"], table)
    failed = [r["check"] for r in results if not r["passed"]]
    if failed:
        diagnostics = environments.diagnostics(environment)
        raise ReleaseError(
            f"dev smoke checks failed for {spec.name} {plan['version']} on {environments.describe(environment)}: "
            f"{', '.join(failed)}.\n{table}\n"
            + (f"{diagnostics}\n" if diagnostics else "")
            + "Nothing was deployed; the dev environment is removed by teardown. Fix the app and release again."
        )
    return results


def start_staging_test(plan: dict[str, Any], environment: dict[str, str]) -> dict[str, Any]:
    """The app healthy in staging, then its staging test command started (`staging_test_waiter`
    names what it still waits for; `staging_test_result` judges it once it has ended)."""
    spec, environments = app_spec(plan["app"]), platform_for().environments
    health = environments.smoke_checks(environment, spec=spec, checks=[], version=plan["version"])
    if not health[0]["passed"]:
        raise ReleaseError(f"{spec.name} {plan['version']} never became healthy in staging: {health[0]['detail']}")
    return environments.start_test_command(environment, spec=spec, command=spec.staging.test_command)


def staging_test_waiter(running: dict[str, Any]) -> tuple[Any, float] | None:
    return platform_for().environments.test_command_waiter(running)


def finish_staging_test(running: dict[str, Any]) -> dict[str, Any]:
    return platform_for().environments.finish_test_command(running)


def staging_test_result(plan: dict[str, Any], ended: dict[str, Any]) -> dict[str, Any]:
    """The ended command's exit code and output; a failure stops the release before any deploy."""
    spec = app_spec(plan["app"])
    code, output = int(ended["exit_code"]), str(ended["output"])
    log.info("staging test command %s exited %d:\n%s", spec.staging.test_command, code, output)
    if code != 0:
        raise ReleaseError(
            f"the staging test failed (exit {code}) for {spec.name} {plan['version']}:\n{output[-2000:]}\n"
            "Nothing was deployed; the staging environment is removed by teardown."
        )
    return {"exit_code": code, "output": output[-2000:]}


def destroy_environment(kind: str, app: str, run_id: str) -> list[str]:
    name = environment_name(kind, app, run_id)
    removed = platform_for().environments.destroy(name)
    log.info("removed %s environment %s: %s", kind, name, removed or "nothing was left")
    return removed


def copy_to_region(plan: dict[str, Any], baked: dict[str, Any], region: str, *, wait: bool = True) -> dict[str, Any]:
    """Copy the signed image into the region; verify digest and signature there.

    With `wait=False` a platform whose copies take long may answer "pending": the task defers until
    the copy is done (`operators.region_copy.CopyToRegionOperator`), then calls `finish_copy`.
    """
    image, platform = Baked.of(baked), platform_for()
    images = platform.images
    deployable(platform, None, image.repository, image.digest)
    copy = images.copy_to(region, image, wait=wait)
    if copy.pending:
        log.info("%s: copying %s as %s; waiting for it in the triggerer", region, image.digest, copy.image_id)
        return copy.dump()
    return images.finish_copy(image, copy).dump()


def finish_copy(
    plan: dict[str, Any], baked: dict[str, Any], region: str, report: dict[str, Any], failure: str | None = None
) -> dict[str, Any]:
    """A copy that is done (or failed, with `failure` saying why): verify it, or clean it up."""
    return platform_for().images.finish_copy(Baked.of(baked), RegionCopy.of(report), failure).dump()


def summarize(plan: dict[str, Any], baked: dict[str, Any], copies: list[dict[str, Any]]) -> dict[str, Any]:
    """Every region holds the same build: each copy's digest is the baked one (on aws, a copy's own
    AMI id differs per region; `images` lists them)."""
    image = Baked.of(baked)
    found = [RegionCopy.of(c) for c in copies]
    table = platform_for().images.describe_copies(image, found)
    log.info("%s %s is in every region by the same digest:\n%s", plan["app"], plan["version"], table)
    return {
        "app": plan["app"],
        "version": plan["version"],
        "digest": image.digest,
        "regions": {c.region: c.digest for c in found},
        "images": {c.region: c.image_id for c in found},
    }


def retain_images(app: str, now: datetime, *, protect: Sequence[str] = ()) -> dict[str, Any]:
    """Remove the app's old images per the platform's retention policy; never one that runs, that a
    channel points at, or one in `protect`. `now` is the run's date, not the clock."""
    return platform_for().images.retain(app_spec(app).repository, now, protect=protect)
