"""The app on aws: its wheel built on the worker and stored in the artifact bucket, then baked onto
the base AMI pinned by id on a builder instance, which becomes the app's AMI."""

from __future__ import annotations

import io
import logging
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutable.aws.amis import AwsImageError, ec2, s3
from immutable.aws.builders import (
    BUILD_SCRIPT_TIMEOUT_S,
    ami_name,
    builder_instance,
    earlier_try,
    inventory_of,
    run_script,
    settle_image,
    start_image,
    start_script_on_builder,
    with_inventory,
)
from immutable.aws.sboms import sbom_from_listing_on_builder
from immutable.aws.tags import TAG_KIND, TAG_REPOSITORY, TAG_SBOM

if TYPE_CHECKING:
    from immutable.aws.hooks.ssm import CommandResult
    from immutable.config import BaseImageSpec, PlatformConfig

log = logging.getLogger(__name__)

ARTIFACT_URL_TTL_S = 3600  # seconds a presigned artifact URL stays valid for the builder
APP_DIR = "/opt/app"


def build_wheel(source_tar: bytes, workdir: Path) -> tuple[str, bytes]:
    """`pip wheel --no-deps` of the app source on the worker (AWS workers may have no Docker)."""
    import subprocess
    import sys

    src = workdir / "src-root"
    src.mkdir()
    with tarfile.open(fileobj=io.BytesIO(source_tar)) as tar:
        tar.extractall(src, filter="data")
    out = workdir / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(out)]
    try:
        import setuptools  # ruff: ignore[unused-import]
        import wheel  # ruff: ignore[unused-import]

        command.append("--no-build-isolation")  # the worker's own setuptools: no index needed
    except ImportError:
        pass
    result = subprocess.run([*command, str(src / "src")], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AwsImageError(f"building the wheel failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise AwsImageError(f"expected one wheel from the app source, got {[w.name for w in wheels]}")
    return wheels[0].name, wheels[0].read_bytes()


def upload_artifact(platform: PlatformConfig, *, app: str, version: str, name: str, body: bytes) -> dict[str, str]:
    """Store the wheel under a key naming its sha256, so an artifact never changes once stored."""
    import hashlib

    settings = platform.aws_settings
    hexdigest = hashlib.sha256(body).hexdigest()
    key = f"apps/{app}/{version}/{hexdigest}/{name}"
    hook = s3(platform)
    try:
        existing = hook.artifact_metadata(bucket=settings.artifact_bucket, key=key)
        if existing is None:
            hook.put_artifact(bucket=settings.artifact_bucket, key=key, body=body, metadata={"sha256": hexdigest})
    except Exception as exc:
        raise AwsImageError(
            f"could not store {name} in s3://{settings.artifact_bucket}/{key} ({settings.build_region}): {exc}"
        ) from exc
    return {"bucket": settings.artifact_bucket, "key": key, "sha256": f"sha256:{hexdigest}"}


def app_bake_script(
    *,
    url: str,
    wheel: str,
    sha256_hex: str,
    distribution: str,
    python_version: str,
    spec: Any,
    base: BaseImageSpec,
    version: str,
) -> list[str]:
    """Fetch the wheel (presigned URL), check its sha256, install it into a venv without pip, add the unit."""
    import json
    import shlex

    user = base.runtime_user
    unit = "\n".join(
        [
            "[Unit]",
            f"Description={spec.name} {version}",
            "After=network-online.target",
            "[Service]",
            f"User={user.name}",
            f"Environment=PORT={spec.runtime.port} APP_VERSION={version}",
            *(f"Environment={k}={v}" for k, v in sorted(spec.runtime.env.items())),
            f"ExecStart={' '.join(shlex.quote(c) for c in spec.runtime.command)}",
            "Restart=always",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
    )
    fetch = (
        "import hashlib,sys,urllib.request;d=urllib.request.urlopen(sys.argv[1],timeout=300).read();"
        "sys.exit('sha256 mismatch') if hashlib.sha256(d).hexdigest()!=sys.argv[2] else open(sys.argv[3],'wb').write(d)"
    )
    return [
        "set -eu",
        "mkdir -p /tmp/wheels",
        f"python3 -c {shlex.quote(fetch)} {shlex.quote(url)} {sha256_hex} /tmp/wheels/{shlex.quote(wheel)}",
        f"python3 -m venv /tmp/tools && python3 -m venv --without-pip {APP_DIR}",
        f"/tmp/tools/bin/pip --python {APP_DIR}/bin/python install --no-cache-dir --disable-pip-version-check "
        f"--no-index --find-links /tmp/wheels {shlex.quote(f'{distribution}=={python_version}')}",
        "rm -rf /tmp/tools /tmp/wheels",
        f"printf '%s\\n' {shlex.quote(unit)} > /etc/systemd/system/{spec.name}.service",
        f"systemctl enable {spec.name}.service",
        f"echo {shlex.quote(json.dumps({'app': spec.name, 'version': version}))} > /usr/share/immutable/app.json",
    ]


def bake_app(
    platform: PlatformConfig,
    *,
    spec: Any,
    base: BaseImageSpec,
    base_image_id: str,
    version: str,
    build_tag: str,
    artifact: dict[str, str],
    labels: dict[str, str],
    run_id: str,
    wait: bool = True,
) -> dict[str, Any]:
    """Builder from the base AMI pinned by id; install the wheel from S3; list what is installed; the
    AMI, tagged with provenance; its SBOM from that list. Returns {"image_id", "pending", "started_at"}:
    with `wait=False` the AMI may still be pending, its builder kept until `finish_image`."""
    from immutable.images.app import python_version

    settings = platform.aws_settings
    region = settings.build_region
    hook = ec2(platform)
    for existing in hook.find_images(tags={TAG_REPOSITORY: spec.repository, "immutable:build-tag": build_tag}):
        if hook.image_tags(existing).get("io.immutable.airflow.run-id") != run_id:
            continue
        made = earlier_try(platform, existing, wait=wait)
        if made is not None:  # None: it failed and is deregistered; bake again
            return made
    if hook.get_image(image_id=base_image_id) is None:
        raise AwsImageError(f"the base AMI {base_image_id} does not exist in {region}; run base_image first")
    metadata = s3(platform).artifact_metadata(bucket=artifact["bucket"], key=artifact["key"])
    if metadata is None or f"sha256:{metadata.get('sha256')}" != artifact["sha256"]:
        raise AwsImageError(
            f"artifact s3://{artifact['bucket']}/{artifact['key']} is missing or no longer matches "
            f"{artifact['sha256']}; package again"
        )
    url = s3(platform).presigned_get(bucket=artifact["bucket"], key=artifact["key"], expires_s=ARTIFACT_URL_TTL_S)
    script = with_inventory(
        app_bake_script(
            url=url,
            wheel=artifact["key"].rsplit("/", 1)[1],
            sha256_hex=artifact["sha256"].split(":", 1)[1],
            distribution=spec.packaging.distribution,
            python_version=python_version(version),
            spec=spec,
            base=base,
            version=version,
        )
    )
    context = {
        "app": spec.name,
        "repository": spec.repository,
        "version": version,
        "build_tag": build_tag,
        "base_image_id": base_image_id,
        "labels": labels,
        "wheel": artifact["key"].rsplit("/", 1)[1],
        "wheel_sha256": artifact["sha256"].split(":", 1)[1],
        "run_id": run_id,
    }
    comment = f"bake {spec.name} {version}"
    if not wait:  # each wait in the triggerer: the agent, the script (`builders.advance_script`), the AMI
        stage = start_script_on_builder(
            platform,
            image_id=base_image_id,
            role="bake",
            run_id=run_id,
            repository=spec.repository,
            script=script,
            comment=comment,
            timeout_s=BUILD_SCRIPT_TIMEOUT_S,
            context=context,
        )
        return {"image_id": "", "pending": True, "started_at": None, "builder": stage}
    with builder_instance(
        platform, image_id=base_image_id, role="bake", run_id=run_id, repository=spec.repository
    ) as instance_id:
        result = run_script(platform, instance_id, script, comment, BUILD_SCRIPT_TIMEOUT_S)
        image_id = image_the_builder(platform, instance_id, result, context)["image_id"]
        settle_image(platform, image_id=image_id, name=ami_name(spec.repository, build_tag))
    log.info("baked %s %s as %s in %s", spec.name, version, image_id, region)
    return {"image_id": image_id, "pending": False, "started_at": None}


def image_the_builder(
    platform: PlatformConfig, instance_id: str, result: CommandResult, context: dict[str, Any]
) -> dict[str, Any]:
    """After the bake's script: refuse a failed one; list what the builder holds (its SBOM); stop it
    and start its AMI, tagged with provenance. Returns {"image_id", "started_at"}."""
    region = platform.aws_settings.build_region
    app, version = context["app"], context["version"]
    if not result.ok:
        raise AwsImageError(
            f"installing {app} {version} failed on builder {instance_id} in {region} "
            f"(SSM command {result.command_id}: {result.status}, exit {result.exit_code}):\n"
            f"{(result.stdout + result.stderr)[-3000:]}\nThe builder is terminated; no AMI was made."
        )
    sbom = sbom_from_listing_on_builder(
        platform,
        listing=inventory_of(result.stdout)[1],
        repository=context["repository"],
        describes=f"{context['build_tag']}@{context['run_id']}",
        labels=context["labels"],
        wheel_sha256={context["wheel"]: context["wheel_sha256"]},
    )
    started_at = time.time()
    image_id = start_image(
        platform,
        instance_id=instance_id,
        name=ami_name(context["repository"], context["build_tag"]),
        description=f"{app} {version} on {context['base_image_id']}",
        tags=context["labels"]
        | {
            TAG_REPOSITORY: context["repository"],
            TAG_KIND: "app",
            "immutable:build-tag": context["build_tag"],
            TAG_SBOM: sbom,
            "Name": f"{app} {version}",
        },
    )
    return {"image_id": image_id, "started_at": started_at}


def package(platform: PlatformConfig, *, spec: Any, version: str, ref: str, uid: int) -> dict[str, Any]:
    """The wheel is built on the worker (pip wheel --no-deps) and stored in the artifact bucket.

    `artifact` is the object's s3:// URI, which `artifact_of` reads back at the bake."""
    from immutable.images import app as app_images

    with app_images.with_tempdir() as tmp:
        tree = app_images.checkout(spec, ref, Path(tmp))
        source_tar = app_images.source_archive(tree, version, uid)
        name, body = build_wheel(source_tar, Path(tmp))
    wheel = app_images.app_wheel_name({name: body}, spec.packaging.distribution, version)
    artifact = upload_artifact(platform, app=spec.name, version=version, name=wheel, body=body)
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
    log.info("packaged %s %s: %s (%s), stored as %s", spec.name, version, wheel, result["sha256"], result["artifact"])
    return result


def artifact_of(uri: str, sha256: str) -> dict[str, str]:
    """The bucket, key and sha256 of a packaged artifact from its s3:// URI."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise AwsImageError(f"the packaged artifact {uri!r} is not an s3://bucket/key URI; package again on aws")
    return {"bucket": bucket, "key": key, "sha256": sha256}
