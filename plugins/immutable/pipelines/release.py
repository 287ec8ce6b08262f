"""The release_<app> DAGs' task bodies: validate, package, bake, sign, test in dev and staging, copy.

Each takes plain values (from XCom or the task context) and returns JSON-ready dicts. Each is
safe to run twice: it checks the registries before it pushes, and environments have fixed names.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from immutable.app_spec import AppSpec, app_spec, parse_release_params
from immutable.config import ConfigError, load_base_spec, load_platform

log = logging.getLogger(__name__)

OCI = "org.opencontainers.image"
LABEL_RUN_ID = "io.immutable.airflow.run-id"


class ReleaseError(RuntimeError):
    pass


class NothingToRelease(ReleaseError):
    """A run scheduled by a new base image for an app with nothing in production yet: skip, not fail."""


def base_channel(spec: AppSpec) -> str:
    return "candidate" if spec.tier == "canary" else "stable"


def validate(
    app: str,
    params: dict[str, Any],
    base_events: list[dict[str, Any]],
    run_after: datetime,
) -> dict[str, Any]:
    """Check the spec, the trigger and the inputs before anything is built; pin the base by digest."""
    from immutable.images import base as base_images
    from immutable.registry import RegistryClient

    spec = app_spec(app)
    release = parse_release_params(params)
    platform, base_spec = load_platform(), load_base_spec()
    if release.ref and spec.source.git is None:
        raise ConfigError(
            f"release trigger: field 'ref': '{release.ref}' was given but app '{app}' builds from the repo folder "
            f"'{spec.source.path}', which has no refs; leave ref empty"
        )
    regions = spec.rollout_regions(platform)
    channel = base_channel(spec)
    if base_events:
        event = base_events[-1]
        base_digest, base_version = str(event["digest"]), str(event["version"])
        log.info("triggered by base-image/%s %s (%s)", channel, base_version, base_digest)
    elif platform.platform == "aws":
        base_digest, base_version = _aws_base(platform, base_spec.repository, channel, spec.tier)
    else:
        build_registry = RegistryClient(platform.build_registry)
        found = build_registry.manifest_digest(base_spec.repository, channel)
        if found is None:
            raise ReleaseError(
                f"there is no base image on the '{channel}' channel yet, which {spec.tier}-tier apps build on; "
                + ("run the base_image DAG first" if channel == "candidate" else "run promote_base first")
            )
        base_digest = found
        labels = build_registry.labels(base_spec.repository, base_digest) or {}
        base_version = labels.get(base_images.LABEL_VERSION, "unknown")

    version = release.version
    rereleased = False
    if not version:
        pilot = regions[0]
        from immutable.pipelines.production import live_version

        live = live_version(app, pilot)
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
        version = live
        rereleased = True
        log.info("re-releasing %s %s (in production) on base %s", app, version, base_version)
    plan = {
        "app": app,
        "version": version,
        "rereleased": rereleased,
        "ref": release.ref,
        "note": release.note,
        "regions": regions,
        "waves": spec.rollout_waves(platform),
        "repository": spec.repository,
        "base": {
            "repository": base_spec.repository,
            "digest": base_digest,
            "version": base_version,
            "image": base_digest
            if platform.platform == "aws"
            else f"{platform.build_registry}/{base_spec.repository}@{base_digest}",
            "channel": channel,
        },
        "created": run_after.isoformat(),
    }
    log.info("release plan:\n%s", json.dumps(plan, indent=2))
    return plan


def package(plan: dict[str, Any]) -> dict[str, Any]:
    """Build the wheel in a container from the base image; store it as an artifact; record its sha256."""
    from immutable.images import app as app_images
    from immutable.images.engine import docker_client
    from immutable.registry import RegistryClient

    spec, platform, base_spec = app_spec(plan["app"]), load_platform(), load_base_spec()
    if platform.platform == "aws":
        return _aws_package(plan, spec, base_spec.runtime_user.uid)
    docker_client().images.pull(plan["base"]["image"])
    with app_images.with_tempdir() as tmp:
        from pathlib import Path

        tree = app_images.checkout(spec, plan["ref"], Path(tmp))
        source_tar = app_images.source_archive(tree, plan["version"], base_spec.runtime_user.uid)
    wheels = app_images.build_wheels(
        base_ref=plan["base"]["image"], source_tar=source_tar, uid=base_spec.runtime_user.uid
    )
    wheel = app_images.app_wheel_name(wheels, spec.packaging.distribution, plan["version"])
    registry = RegistryClient(platform.build_registry)
    artifact_repo = f"artifacts/{spec.name}"
    artifact_digest = app_images.push_wheels(registry, artifact_repo, plan["version"], wheels, wheel)
    result = {
        "wheel": wheel,
        "sha256": app_images.sha256(wheels[wheel]),
        "dependencies": sorted(n for n in wheels if n != wheel),
        "artifact": f"{platform.build_registry}/{artifact_repo}@{artifact_digest}",
        "artifact_repository": artifact_repo,
        "artifact_digest": artifact_digest,
        "revision": tree.revision,
        "source": tree.description,
    }
    log.info(
        "packaged %s %s: %s (%s), stored as %s", spec.name, plan["version"], wheel, result["sha256"], result["artifact"]
    )
    return result


def _app_labels(
    plan: dict[str, Any], packaged: dict[str, Any], app: str, base_name: str, run_id: str
) -> dict[str, str]:
    """The app image's provenance (container labels locally, AMI tags on aws): what, from which
    source and base, built by which run."""
    from immutable.images import app as app_images

    return {
        f"{OCI}.version": plan["version"],
        f"{OCI}.revision": packaged["revision"],
        f"{OCI}.created": plan["created"],
        f"{OCI}.source": packaged["source"],
        f"{OCI}.title": app,
        f"{OCI}.base.name": base_name,
        f"{OCI}.base.digest": plan["base"]["digest"],
        app_images.LABEL_APP: app,
        app_images.LABEL_ARTIFACT: packaged["sha256"],
        LABEL_RUN_ID: run_id,
    }


def bake(plan: dict[str, Any], packaged: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Install the wheel onto the base pinned by digest; label with provenance; push by digest."""
    from immutable.images import app as app_images
    from immutable.images import base as base_images
    from immutable.registry import RegistryClient

    spec, platform, base_spec = app_spec(plan["app"]), load_platform(), load_base_spec()
    build_tag = f"{plan['version']}-b{plan['base']['version']}"
    if platform.platform == "aws":
        return _aws_bake(plan, packaged, run_id, build_tag)
    registry = RegistryClient(platform.build_registry)
    existing = registry.labels(spec.repository, build_tag)
    if existing is not None and existing.get(LABEL_RUN_ID) == run_id:
        digest = registry.manifest_digest(spec.repository, build_tag)
        log.info("already baked by this run as %s; reusing it", digest)
        return _baked(platform.build_registry, spec.repository, str(digest), existing, [plan["version"], build_tag])

    base_name = f"{platform.build_registry}/{plan['base']['repository']}:{plan['base']['version']}"
    labels = _app_labels(plan, packaged, spec.name, base_name, run_id)
    wheels = app_images.fetch_wheels(registry, packaged["artifact_repository"], packaged["artifact_digest"])
    if app_images.sha256(wheels[packaged["wheel"]]) != packaged["sha256"]:
        raise ReleaseError(
            f"artifact {packaged['artifact']} no longer matches sha256 {packaged['sha256']}; package again"
        )
    context = app_images.bake_context(
        spec=spec, base=base_spec, base_ref=plan["base"]["image"], version=plan["version"], wheels=wheels
    )
    image_id = app_images.bake(context=context, labels=labels, tag=f"{spec.repository}:{build_tag}")
    repository = f"{platform.build_registry}/{spec.repository}"
    digest = base_images.push(image_id, repository, build_tag)
    moved = base_images.push(image_id, repository, plan["version"])
    if moved != digest:
        raise ReleaseError(f"pushing tag {plan['version']} gave {moved}, expected {digest}; rerun bake")
    log.info("baked %s %s as %s@%s", spec.name, plan["version"], repository, digest)
    return _baked(platform.build_registry, spec.repository, digest, labels, [plan["version"], build_tag])


def _baked(registry: str, repository: str, digest: str, labels: dict[str, str], tags: list[str]) -> dict[str, Any]:
    return {
        "repository": repository,
        "digest": digest,
        "image": f"{registry}/{repository}@{digest}",
        "tags": tags,
        "labels": labels,
    }


def sign(baked: dict[str, Any]) -> dict[str, Any]:
    """Sign digest + provenance with the pipeline's ed25519 key; store the signature beside the image."""
    from immutable.images.app import sha256
    from immutable.platforms.interface import images_for
    from immutable.registry import RegistryClient
    from immutable.signing import SignatureError, load_signer, signature_tag

    platform = load_platform()
    images = images_for(platform)
    try:
        images.verify_in(None, baked["repository"], baked["digest"])
        log.info("%s is already signed with our key", baked["image"])
    except SignatureError:
        if platform.platform == "aws":
            from immutable.aws import images as amis

            # Over the AMI id and its provenance tags; the signature is stored as tags on the AMI,
            # and copy_image copies it along with the other tags.
            signature = amis.sign_image(platform, repository=baked["repository"], image_id=baked["digest"])
            images.verify_in(None, baked["repository"], baked["digest"])
            log.info("signed %s (signature %s...)", baked["image"], signature[:16])
            return {"digest": baked["digest"], "signature_tag": "immutable:signature.0"}
        signer = load_signer(platform)
        labels = RegistryClient(platform.build_registry).labels(baked["repository"], baked["digest"]) or {}
        document = json.dumps(signer.sign(baked["repository"], baked["digest"], labels), sort_keys=True).encode()
        RegistryClient(platform.build_registry).push_artifact(
            baked["repository"],
            signature_tag(baked["digest"]),
            [
                (
                    document,
                    "application/vnd.immutable.signature.v1+json",
                    {"io.immutable.signed.digest": baked["digest"]},
                )
            ],
            "application/vnd.immutable.signature.v1",
        )
        images.verify_in(None, baked["repository"], baked["digest"])
        log.info("signed %s (signature %s)", baked["image"], sha256(document))
    return {"digest": baked["digest"], "signature_tag": signature_tag(baked["digest"])}


def create_environment(kind: str, plan: dict[str, Any], baked: dict[str, Any], run_id: str) -> dict[str, str]:
    from immutable import environments
    from immutable.platforms.interface import images_for

    spec, platform = app_spec(plan["app"]), load_platform()
    images_for(platform).verify_in(None, baked["repository"], baked["digest"])
    settings = spec.dev if kind == "dev" else spec.staging
    name = environments.environment_name(kind, spec.name, run_id)
    if platform.platform == "aws":
        from immutable.aws import environments as aws_environments

        made = aws_environments.create(
            platform, kind=kind, name=name, spec=spec, image_id=baked["digest"], run_id=run_id
        )
        log.info("%s environment %s: %s (%s) from %s", kind, name, made["url"], made["instance_id"], baked["digest"])
        return made
    environment = environments.create(name=name, spec=spec, image=baked["image"], env=dict(settings.env))
    log.info("%s environment %s: %s from %s", kind, name, environment.url, baked["image"])
    return environment.as_dict()


def dev_test(plan: dict[str, Any], environment: dict[str, str]) -> list[dict[str, Any]]:
    from immutable import environments

    spec, platform = app_spec(plan["app"]), load_platform()
    if platform.platform == "aws":
        from immutable.aws import environments as aws_environments

        results = aws_environments.smoke_checks(
            platform, environment, spec=spec, checks=spec.dev.smoke_checks, version=plan["version"]
        )
        return _judge_dev(spec.name, plan["version"], results, f"instance {environment['instance_id']}")
    env = environments.Environment(**environment)
    results = environments.smoke_checks(env, spec=spec, checks=spec.dev.smoke_checks, version=plan["version"])
    table = "\n".join(f"{'PASS' if r['passed'] else 'FAIL'}  {r['check']:<20} {r['detail']}" for r in results)
    log.info("dev smoke checks of %s %s:\n%s", spec.name, plan["version"], table)
    failed = [r["check"] for r in results if not r["passed"]]
    if failed:
        raise ReleaseError(
            f"dev smoke checks failed for {spec.name} {plan['version']}: {', '.join(failed)}.\n{table}\n"
            f"app container log (last lines):\n{environments.app_logs(env)}\n"
            "Nothing was deployed; the dev environment is removed by teardown. Fix the app and release again."
        )
    return results


def staging_test(plan: dict[str, Any], environment: dict[str, str]) -> dict[str, Any]:
    from immutable import environments

    spec, platform = app_spec(plan["app"]), load_platform()
    if platform.platform == "aws":
        from immutable.aws import environments as aws_environments

        health = aws_environments.smoke_checks(platform, environment, spec=spec, checks=[], version=plan["version"])
    else:
        env = environments.Environment(**environment)
        health = environments.smoke_checks(env, spec=spec, checks=[], version=plan["version"])
    if not health[0]["passed"]:
        raise ReleaseError(f"{spec.name} {plan['version']} never became healthy in staging: {health[0]['detail']}")
    if platform.platform == "aws":
        code, output = aws_environments.run_test_command(
            platform, environment, spec.staging.test_command, spec.runtime.port
        )
    else:
        code, output = environments.run_test_command(env, spec.staging.test_command)
    log.info("staging test command %s exited %d:\n%s", spec.staging.test_command, code, output)
    if code != 0:
        raise ReleaseError(
            f"the staging test failed (exit {code}) for {spec.name} {plan['version']}:\n{output[-2000:]}\n"
            "Nothing was deployed; the staging environment is removed by teardown."
        )
    return {"exit_code": code, "output": output[-2000:]}


def destroy_environment(kind: str, app: str, run_id: str) -> list[str]:
    from immutable import environments

    name = environments.environment_name(kind, app, run_id)
    platform = load_platform()
    if platform.platform == "aws":
        from immutable.aws import environments as aws_environments

        removed = aws_environments.destroy(platform, name=name)
    else:
        removed = environments.destroy(name)
    log.info("removed %s environment %s: %s", kind, name, removed or "nothing was left")
    return removed


def copy_to_region(plan: dict[str, Any], baked: dict[str, Any], region: str, *, wait: bool = True) -> dict[str, Any]:
    """Copy the signed image to the region's registry; verify digest and signature there.

    On aws with `wait=False` a copy still on its way comes back with "pending": True, unverified:
    the task defers until it is available (`operators.region_copy.CopyToRegionOperator`), then calls
    `finish_copy`.
    """
    from immutable.platforms.interface import images_for

    platform = load_platform()
    images = images_for(platform)
    images.verify_in(None, baked["repository"], baked["digest"])
    if platform.platform == "aws":
        from immutable.platforms.aws import AwsImages

        assert isinstance(images, AwsImages)  # images_for gives the aws platform's own
        report = images.copy_to(region, baked["repository"], baked["digest"], baked["tags"], wait=wait)
        # A copy started now is always handed to the triggerer: a real one takes minutes.
        if not wait and (report["copied"] or report["state"] != "available"):
            log.info(
                "%s: copying %s as %s; waiting for it in the triggerer", region, baked["digest"], report["image_id"]
            )
            return report | {"pending": True}
        return finish_copy(plan, baked, region, report)
    report = images.copy_to(region, baked["repository"], baked["digest"], baked["tags"])
    images.verify_in(region, baked["repository"], baked["digest"])
    log.info(
        "%s: %s present with a valid signature; %d blob(s) sent (%d bytes), %d already there",
        region,
        baked["digest"],
        len(report["pushed_blobs"]),
        report["bytes_pushed"],
        len(report["skipped_blobs"]),
    )
    return report


def finish_copy(
    plan: dict[str, Any], baked: dict[str, Any], region: str, report: dict[str, Any], failure: str | None = None
) -> dict[str, Any]:
    """An AMI copy that is available (or failed, with `failure` saying why): verify it, or clean it up."""
    from immutable.aws import images as amis
    from immutable.platforms.interface import images_for

    platform = load_platform()
    if failure is not None:
        raise amis.discard_failed_copy(
            platform,
            region=region,
            source_image_id=baked["digest"],
            image_id=report["image_id"],
            copied=report["copied"],
            cause=failure,
        )
    images_for(platform).verify_in(region, baked["repository"], baked["digest"])
    log.info(
        "%s: %s is %s there (%s), signature valid",
        region,
        baked["digest"],
        report["image_id"],
        "copied now" if report["copied"] else "already there",
    )
    return report | {"pending": False, "state": "available"}


def summarize(plan: dict[str, Any], baked: dict[str, Any], copies: list[dict[str, Any]]) -> dict[str, Any]:
    if load_platform().platform == "aws":
        # Each region has its own AMI id; every one is a copy of the same signed build-region AMI.
        images = {c["region"]: c["image_id"] for c in copies}
        sources = {c["region"]: c["source_image_id"] for c in copies}
        lines = [
            f"{c['region']:<16} {c['image_id']:<24} {'copied' if c['copied'] else 'already there'}" for c in copies
        ]
        log.info("%s %s (%s) is in every region:\n%s", plan["app"], plan["version"], baked["digest"], "\n".join(lines))
        if set(sources.values()) != {baked["digest"]}:
            raise ReleaseError(f"regions hold copies of different AMIs: {sources}; expected {baked['digest']}")
        return {
            "app": plan["app"],
            "version": plan["version"],
            "digest": baked["digest"],
            "regions": {region: baked["digest"] for region in images},
            "images": images,
        }
    by_region = {c["region"]: c["digest"] for c in copies}
    lines = [f"{'region':<12} {'digest':<71} blobs sent"]
    lines += [f"{c['region']:<12} {c['digest']:<71} {len(c['pushed_blobs'])}" for c in copies]
    log.info("%s %s is in every region by the same digest:\n%s", plan["app"], plan["version"], "\n".join(lines))
    if set(by_region.values()) != {baked["digest"]}:
        raise ReleaseError(f"regions hold different digests: {by_region}; expected {baked['digest']} everywhere")
    return {"app": plan["app"], "version": plan["version"], "digest": baked["digest"], "regions": by_region}


def _judge_dev(app: str, version: str, results: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    table = "\n".join(f"{'PASS' if r['passed'] else 'FAIL'}  {r['check']:<20} {r['detail']}" for r in results)
    log.info("dev smoke checks of %s %s:\n%s", app, version, table)
    failed = [r["check"] for r in results if not r["passed"]]
    if failed:
        raise ReleaseError(
            f"dev smoke checks failed for {app} {version} on {where}: {', '.join(failed)}.\n{table}\n"
            "Nothing was deployed; the dev environment is removed by teardown. Fix the app and release again."
        )
    return results


def _aws_base(platform: Any, repository: str, channel: str, tier: str) -> tuple[str, str]:
    """The base AMI the channel tag points at in the build region: (AMI id, version)."""
    from immutable.aws import images as amis

    image = amis.channel_image(platform, repository, channel)
    if image is None:
        raise ReleaseError(
            f"there is no base AMI on the '{channel}' channel in {platform.aws_settings.build_region} yet, which "
            f"{tier}-tier apps build on; "
            + ("run the base_image DAG first" if channel == "candidate" else "run promote_base first")
        )
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    return str(image["ImageId"]), tags.get(f"{OCI}.version", "unknown")


def _aws_package(plan: dict[str, Any], spec: AppSpec, uid: int) -> dict[str, Any]:
    """The wheel is built on the worker (pip wheel --no-deps) and stored in the artifact bucket."""
    from pathlib import Path

    from immutable.aws import images as amis
    from immutable.images import app as app_images

    platform = load_platform()
    with app_images.with_tempdir() as tmp:
        tree = app_images.checkout(spec, plan["ref"], Path(tmp))
        source_tar = app_images.source_archive(tree, plan["version"], uid)
        name, body = amis.build_wheel(source_tar, Path(tmp))
    wheel = app_images.app_wheel_name({name: body}, spec.packaging.distribution, plan["version"])
    artifact = amis.upload_artifact(platform, app=spec.name, version=plan["version"], name=wheel, body=body)
    result = {
        "wheel": wheel,
        "sha256": artifact["sha256"],
        "dependencies": [],
        "artifact": f"s3://{artifact['bucket']}/{artifact['key']}",
        "artifact_bucket": artifact["bucket"],
        "artifact_key": artifact["key"],
        "revision": tree.revision,
        "source": tree.description,
    }
    log.info(
        "packaged %s %s: %s (%s), stored as %s", spec.name, plan["version"], wheel, result["sha256"], result["artifact"]
    )
    return result


def _aws_bake(plan: dict[str, Any], packaged: dict[str, Any], run_id: str, build_tag: str) -> dict[str, Any]:
    from immutable.aws import images as amis

    spec, platform, base_spec = app_spec(plan["app"]), load_platform(), load_base_spec()
    base_name = f"{plan['base']['repository']}:{plan['base']['version']}"
    labels = _app_labels(plan, packaged, spec.name, base_name, run_id)
    image_id = amis.bake_app(
        platform,
        spec=spec,
        base=base_spec,
        base_image_id=plan["base"]["digest"],
        version=plan["version"],
        build_tag=build_tag,
        artifact={"bucket": packaged["artifact_bucket"], "key": packaged["artifact_key"], "sha256": packaged["sha256"]},
        labels=labels,
        run_id=run_id,
    )
    return {
        "repository": spec.repository,
        "digest": image_id,
        "image": image_id,
        "tags": [plan["version"], build_tag],
        "labels": amis.image_labels(platform, image_id),
    }


def retain_images(app: str, now: datetime) -> dict[str, Any]:
    """aws: deregister the app's AMIs (and snapshots) beyond aws.image_retention, in every region; never
    one a launch template uses or a channel points at. `now` is the run's date, not the clock. Local: nothing
    (registries keep every version)."""
    platform = load_platform()
    if platform.platform != "aws":
        return {}
    from immutable.aws import images as amis

    return amis.retention(platform, repository=app_spec(app).repository, now=now)
