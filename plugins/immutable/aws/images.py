"""AMIs on the aws platform: base build, app bake, signature tags, copies to regions, retention.

An AMI is referred to by its id (the aws "digest"); provenance travels as tags with the same keys
as the local platform's OCI labels. Moving pointers (`candidate`, `stable`) are the tag
`immutable:channel:<name>` on exactly one image per repository. Builder and test instances are tagged with
their role and run, and always terminated, whatever happens.
"""

from __future__ import annotations

import base64
import io
import logging
import tarfile
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutable.aws.tags import (
    TAG_CHANNEL,
    TAG_KIND,
    TAG_REPOSITORY,
    TAG_ROLE,
    TAG_RUN,
    TAG_SIGNATURE,
    TAG_SOURCE_IMAGE,
    TAG_SOURCE_REGION,
    channel_tag,
)

if TYPE_CHECKING:
    from immutable.aws.hooks.ec2 import Ec2ImageHook
    from immutable.aws.hooks.ssm import CommandResult, SsmHook
    from immutable.config import BaseImageSpec, PlatformConfig

log = logging.getLogger(__name__)

BUILD_SCRIPT_TIMEOUT_S = 3600  # seconds: a base build (dist-upgrade) or a bake on the builder
CHECK_TIMEOUT_S = 600  # seconds: checks and probes on a test instance
REMOTE_DIR = "/usr/local/lib/immutable-base"
OCI = "org.opencontainers.image"
TAG_VALUE_MAX = 256  # EC2 tag values are at most 256 characters


class AwsImageError(RuntimeError):
    """An AMI step failed; the message names the region and the resource, and what was cleaned up."""


def ec2(platform: PlatformConfig, region: str | None = None) -> Ec2ImageHook:
    from immutable.aws.hooks.ec2 import Ec2ImageHook

    return Ec2ImageHook.for_region(platform, region or platform.aws_settings.build_region)


def ssm(platform: PlatformConfig, region: str | None = None) -> SsmHook:
    from immutable.aws.hooks.ssm import SsmHook

    return SsmHook.for_region(platform, region or platform.aws_settings.build_region)


def ami_tags(labels: dict[str, str]) -> dict[str, str]:
    """Labels as AMI tags; a value too long for EC2 is refused rather than cut (it is signed)."""
    too_long = sorted(k for k, v in labels.items() if len(v) > TAG_VALUE_MAX)
    if too_long:
        raise AwsImageError(f"provenance values longer than {TAG_VALUE_MAX} characters cannot be AMI tags: {too_long}")
    return dict(labels)


# ---- upstream and channels ---------------------------------------------------------------------


def resolve_upstream(platform: PlatformConfig) -> tuple[str, str]:
    """(what was asked for, the AMI id it resolves to now), checked to exist in the build region."""
    settings = platform.aws_settings
    region = settings.build_region
    source = settings.upstream_ami
    if source.image_id:
        asked, image_id = source.image_id, source.image_id
    else:
        assert source.ssm_parameter is not None  # validated: exactly one of the two
        asked = source.ssm_parameter
        found = ssm(platform).get_parameter(name=source.ssm_parameter)
        if not found:
            raise AwsImageError(
                f"the upstream AMI parameter {source.ssm_parameter} does not exist in {region}; check "
                "aws.upstream_ami.ssm_parameter in the platform file, or pin aws.upstream_ami.image_id"
            )
        image_id = found
    image = ec2(platform).get_image(image_id=image_id)
    if image is None or image.get("State") != "available":
        raise AwsImageError(
            f"the upstream AMI {image_id} (from {asked}) is not available in {region} "
            f"(state: {image.get('State') if image else 'not found'}); fix aws.upstream_ami in the platform file"
        )
    return asked, image_id


def channel_image(platform: PlatformConfig, repository: str, channel: str) -> dict[str, Any] | None:
    """The image the channel tag points at in the build region (None before the first publish)."""
    images = ec2(platform).find_images(tags={TAG_REPOSITORY: repository, channel_tag(channel): "true"})
    return images[0] if images else None


def versions(platform: PlatformConfig, repository: str) -> list[str]:
    """The versions (OCI version tag) of the repository's images in the build region."""
    hook = ec2(platform)
    found = hook.find_images(tags={TAG_REPOSITORY: repository})
    return sorted({hook.image_tags(i).get(f"{OCI}.version", "") for i in found} - {""})


def image_labels(platform: PlatformConfig, image_id: str, region: str | None = None) -> dict[str, str]:
    hook = ec2(platform, region)
    image = hook.get_image(image_id=image_id)
    if image is None:
        raise AwsImageError(f"AMI {image_id} does not exist in {region or platform.aws_settings.build_region}")
    return hook.image_tags(image)


def move_channel(platform: PlatformConfig, repository: str, channel: str, image_id: str) -> list[str]:
    """Point `channel` at image_id: tag it, then take the tag off every other image of the repository."""
    hook = ec2(platform)
    hook.create_tags(resource_ids=[image_id], tags={channel_tag(channel): "true"})
    others = [
        i["ImageId"]
        for i in hook.find_images(tags={TAG_REPOSITORY: repository, channel_tag(channel): "true"})
        if i["ImageId"] != image_id
    ]
    for other in others:
        hook.delete_tags(resource_ids=[other], keys=[channel_tag(channel)])
    log.info("%s:%s now points at %s (moved off %s)", repository, channel, image_id, others or "nothing")
    return others


# ---- instances we launch -----------------------------------------------------------------------


@contextmanager
def instance(
    platform: PlatformConfig,
    *,
    image_id: str,
    role: str,
    run_id: str,
    subnet_id: str,
    security_group_ids: list[str],
    instance_profile: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Generator[str, None, None]:
    """A running instance of ours in the build region; terminated on the way out, whatever happened."""
    settings = platform.aws_settings
    hook = ec2(platform)
    tags = {TAG_ROLE: role, TAG_RUN: run_id[:TAG_VALUE_MAX], "Name": f"immutable-{role}"} | (extra_tags or {})
    try:
        instance_id = hook.run_instance(
            image_id=image_id,
            instance_type=settings.instance_type,
            subnet_id=subnet_id,
            security_group_ids=security_group_ids,
            instance_profile=instance_profile,
            tags=tags,
        )
    except Exception as exc:
        raise AwsImageError(
            f"could not launch a {role} instance from {image_id} in {settings.build_region} (subnet {subnet_id}): {exc}"
        ) from exc
    failed = True
    try:
        hook.wait_instances(instance_ids=[instance_id], state="running")
        yield instance_id
        failed = False
    finally:
        try:
            hook.terminate_instances(instance_ids=[instance_id])
            log.info("terminated %s instance %s in %s", role, instance_id, settings.build_region)
        except Exception as exc:
            log.exception("could not terminate %s instance %s in %s", role, instance_id, settings.build_region)
            if not failed:  # never hide the error that brought us here
                raise AwsImageError(
                    f"could not terminate the {role} instance {instance_id} in {settings.build_region}: {exc}; "
                    "terminate it by hand (it is tagged immutable:role and immutable:run)"
                ) from exc


def terminate_leftovers(platform: PlatformConfig, *, role: str, run_id: str) -> list[str]:
    """Instances of this role and run still alive (a worker that died mid-task): terminate them."""
    hook = ec2(platform)
    found = [i["InstanceId"] for i in hook.find_instances(tags={TAG_ROLE: role, TAG_RUN: run_id[:TAG_VALUE_MAX]})]
    hook.terminate_instances(instance_ids=found)
    return found


def run_script(
    platform: PlatformConfig, instance_id: str, script: list[str], comment: str, timeout_s: int
) -> CommandResult:
    return ssm(platform).run_shell(instance_id=instance_id, commands=script, comment=comment, timeout_s=timeout_s)


def make_image(platform: PlatformConfig, *, instance_id: str, name: str, description: str, tags: dict[str, str]) -> str:
    """Stop the instance, create the AMI, wait until it is available; a failed image is deregistered."""
    hook = ec2(platform)
    region = platform.aws_settings.build_region
    hook.stop_instance(instance_id=instance_id)
    image_id = hook.create_image(instance_id=instance_id, name=name, description=description, tags=ami_tags(tags))
    try:
        hook.wait_image_available(image_id=image_id)
    except Exception as exc:
        hook.deregister_image(image_id=image_id)
        raise AwsImageError(
            f"AMI {image_id} ({name}) never became available in {region}: {exc}; it was deregistered"
        ) from exc
    return image_id


# ---- the base image ----------------------------------------------------------------------------


def _archive(folders: dict[str, Path]) -> str:
    """base64 of a tar.gz holding each folder under its name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, folder in folders.items():
            tar.add(str(folder), arcname=name)
    return base64.b64encode(buffer.getvalue()).decode()


def base_build_script(spec: BaseImageSpec, version: str, context: Path) -> list[str]:
    """The same include/base/ scripts the container build runs, for SSM Run Command on the builder."""
    import shlex

    env = {
        "BUILD_VERSION": version,
        "APT_SOURCES": "",  # the instance's own archive (the region's mirror)
        "REMOVE_PACKAGES": " ".join(spec.remove_packages),
        "COMMON_PACKAGES": " ".join(spec.common_packages),
        "SETUID_ALLOWLIST": " ".join(spec.setuid_allowlist),
        "RUNTIME_USER": spec.runtime_user.name,
        "RUNTIME_UID": str(spec.runtime_user.uid),
    }
    payload = _archive({"scripts": context / "scripts", "sysctl.d": context / "sysctl.d"})
    return [
        "set -eu",
        f"mkdir -p {REMOTE_DIR} && cd {REMOTE_DIR}",
        f"echo {payload} | base64 -d | tar -xz",
        f"cp -r {REMOTE_DIR}/sysctl.d/. /etc/sysctl.d/",
        *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
        f"sh {REMOTE_DIR}/scripts/build.sh",
    ]


PACKAGE_LIST = "/usr/share/immutable/packages.tsv"


@contextmanager
def builder_instance(
    platform: PlatformConfig, *, image_id: str, role: str, run_id: str, repository: str
) -> Generator[str, None, None]:
    """An instance in the builder subnet (base build or bake), after terminating what an earlier try
    of this run left; terminated on the way out."""
    terminate_leftovers(platform, role=role, run_id=run_id)
    builder = platform.aws_settings.builder
    with instance(
        platform,
        image_id=image_id,
        role=role,
        run_id=run_id,
        subnet_id=builder.subnet_id,
        security_group_ids=list(builder.security_group_ids),
        instance_profile=builder.instance_profile,
        extra_tags={TAG_REPOSITORY: repository},
    ) as instance_id:
        yield instance_id


def build_base(
    platform: PlatformConfig,
    *,
    spec: BaseImageSpec,
    upstream_image: str,
    version: str,
    labels: dict[str, str],
    run_id: str,
    context: Path,
) -> dict[str, Any]:
    """Builder from the upstream AMI, the base scripts over SSM, stop, AMI. Reuses this run's own image."""
    settings = platform.aws_settings
    hook = ec2(platform)
    identity = {TAG_REPOSITORY: spec.repository, f"{OCI}.version": version}
    for existing in hook.find_images(tags=identity):
        tags = hook.image_tags(existing)
        if tags.get("io.immutable.airflow.run-id") == labels.get("io.immutable.airflow.run-id"):
            log.info("version %s was already built by this run as %s; reusing it", version, existing["ImageId"])
            return {"image_id": existing["ImageId"], "package_list": ""}
        raise AwsImageError(
            f"version {version} of {spec.repository} already exists in {settings.build_region} as "
            f"{existing['ImageId']} from another run; versions are never overwritten. Rerun check_updates."
        )
    with builder_instance(
        platform, image_id=upstream_image, role="builder", run_id=run_id, repository=spec.repository
    ) as instance_id:
        result = run_script(
            platform, instance_id, base_build_script(spec, version, context), f"base {version}", BUILD_SCRIPT_TIMEOUT_S
        )
        for line in result.stdout.splitlines()[-200:]:
            log.info("build: %s", line)
        if not result.ok:
            raise AwsImageError(
                f"the base scripts failed on builder {instance_id} in {settings.build_region} "
                f"(SSM command {result.command_id}: {result.status}, exit {result.exit_code}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}\nThe builder is terminated; no AMI was made. "
                "Fix the failing script under include/base/scripts/ and rerun."
            )
        listing = run_script(platform, instance_id, [f"cat {PACKAGE_LIST}"], "package list", CHECK_TIMEOUT_S)
        image_id = make_image(
            platform,
            instance_id=instance_id,
            name=f"{spec.repository.replace('/', '-')}-{version}",
            description=f"{spec.repository} {version}",
            tags=labels | {TAG_REPOSITORY: spec.repository, TAG_KIND: "base", "Name": f"{spec.repository} {version}"},
        )
    log.info("built %s %s as %s in %s", spec.repository, version, image_id, settings.build_region)
    return {"image_id": image_id, "package_list": listing.stdout}


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def base_checks_script(spec: BaseImageSpec) -> list[str]:
    """The base image's promises, judged on the instance: `PASS|FAIL name detail` lines, exit 1 on a FAIL."""
    user = spec.runtime_user
    allow = " ".join(spec.setuid_allowlist)
    lines = [
        "fails=0",
        'report() { if [ "$1" = 0 ]; then echo "PASS $2 $3"; else echo "FAIL $2 $3"; fails=1; fi; }',
        "up=$(apt-get update -qq >/dev/null 2>&1 && apt list --upgradable 2>/dev/null | grep -c / || true)",
        'report $([ "${up:-0}" = 0 ] && echo 0 || echo 1) no-pending-upgrades "pending: ${up:-0}"',
    ]
    for package in spec.remove_packages:
        lines.append(
            f"s=$(dpkg-query -W -f='${{Status}}' {package} 2>/dev/null || true); "
            f'case "$s" in *"ok installed"*) r=1;; *) r=0;; esac; report $r removed:{package} "status: ${{s:-absent}}"'
        )
    for package in spec.common_packages:
        lines.append(
            f"s=$(dpkg-query -W -f='${{Status}} ${{Version}}' {package} 2>/dev/null || true); "
            f'case "$s" in *"ok installed"*) r=0;; *) r=1;; esac; report $r common-library:{package} "${{s:-absent}}"'
        )
    lines += [
        "extra=$(find / -xdev -type f \\( -perm -4000 -o -perm -2000 \\) 2>/dev/null | while read f; do "
        f'case " {allow} " in *" $f "*) ;; *) echo "$f";; esac; done | tr "\\n" " ")',
        'report $([ -z "$extra" ] && echo 0 || echo 1) setuid-audit "outside the allowlist: ${extra:-none}"',
        f'u=$(id -u {user.name} 2>/dev/null || true); report $([ "$u" = {user.uid} ] && echo 0 || echo 1) '
        f'runtime-user "{user.name} uid ${{u:-missing}}"',
        'r=$(passwd -S root 2>/dev/null || true); case "$r" in *" L "*) l=0;; *) l=1;; esac; '
        'report $l root-locked "$r"',
        "n=$(grep -c = /etc/sysctl.d/60-immutable-net.conf 2>/dev/null || echo 0); "
        'report $([ "$n" -gt 0 ] && echo 0 || echo 1) sysctl-drop-in "$n settings"',
        f"p=$(wc -l < {PACKAGE_LIST} 2>/dev/null || echo 0); "
        'report $([ "$p" -gt 0 ] && echo 0 || echo 1) package-list "$p packages"',
        "exit $fails",
    ]
    return lines


def parse_checks(result: CommandResult) -> list[Check]:
    checks = []
    for line in result.stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        if verdict in ("PASS", "FAIL"):
            name, _, detail = rest.partition(" ")
            checks.append(Check(name, verdict == "PASS", detail))
    if not checks:
        # The script judges and exits non-zero on any failure; no lines means nothing to show (an
        # emulator runs no commands), so the exit status alone is the verdict.
        checks.append(
            Check("instance-checks", result.ok, f"SSM {result.status}, exit {result.exit_code}, no check output")
        )
    elif not result.ok and all(c.passed for c in checks):
        checks.append(Check("instance-checks", False, f"SSM {result.status}, exit {result.exit_code}"))
    return checks


def test_base(platform: PlatformConfig, *, spec: BaseImageSpec, image_id: str, run_id: str) -> list[Check]:
    """A test instance from the new AMI runs the checks of the base's promises; always terminated."""
    settings = platform.aws_settings
    placement = settings.builder
    with instance(
        platform,
        image_id=image_id,
        role="base-test",
        run_id=run_id,
        subnet_id=placement.subnet_id,
        security_group_ids=list(placement.security_group_ids),
        instance_profile=placement.instance_profile,
    ) as instance_id:
        result = run_script(platform, instance_id, base_checks_script(spec), "base checks", CHECK_TIMEOUT_S)
    return parse_checks(result)


def pending_upgrades(platform: PlatformConfig, *, image_id: str, run_id: str) -> list[str]:
    """Packages in the AMI with an upgrade available in the archive now (a probe instance, terminated)."""
    from immutable.base_policy import parse_upgradable

    placement = platform.aws_settings.builder
    with instance(
        platform,
        image_id=image_id,
        role="upgrade-probe",
        run_id=run_id,
        subnet_id=placement.subnet_id,
        security_group_ids=list(placement.security_group_ids),
        instance_profile=placement.instance_profile,
    ) as instance_id:
        result = run_script(
            platform,
            instance_id,
            ["apt-get update -qq >/dev/null && apt list --upgradable 2>/dev/null"],
            "pending upgrades",
            CHECK_TIMEOUT_S,
        )
    if not result.ok:
        raise AwsImageError(
            f"could not list pending upgrades on an instance of {image_id} in {platform.aws_settings.build_region} "
            f"(SSM {result.status}): {(result.stdout + result.stderr)[-1500:]}"
        )
    return parse_upgradable(result.stdout)


# ---- signatures --------------------------------------------------------------------------------

SIGNATURE_CHUNK = 250  # characters per signature tag (EC2 tag values are at most 256)


def signature_tags(document: dict[str, Any]) -> dict[str, str]:
    """The signature document (base64 payload + signature) as AMI tags: only the signature is stored;
    the payload is rebuilt from the image id and its tags at verification."""
    signature = str(document["signature"])
    chunks = [signature[i : i + SIGNATURE_CHUNK] for i in range(0, len(signature), SIGNATURE_CHUNK)]
    return {f"{TAG_SIGNATURE}.{n}": chunk for n, chunk in enumerate(chunks)}


def signature_from_tags(tags: dict[str, str]) -> str | None:
    parts = sorted((k for k in tags if k.startswith(f"{TAG_SIGNATURE}.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return "".join(tags[k] for k in parts) or None


# ---- copies ------------------------------------------------------------------------------------


def find_copy(platform: PlatformConfig, region: str, source_image_id: str) -> dict[str, Any] | None:
    images = ec2(platform, region).find_images(tags={TAG_SOURCE_IMAGE: source_image_id})
    return images[0] if images else None


def copy_image(platform: PlatformConfig, *, region: str, source_image_id: str, wait: bool = True) -> dict[str, Any]:
    """The AMI in `region`: the build region's own, an existing copy (found by tag), or a new copy.

    Tags are copied (and the source recorded); with the region's kms_key_id the copy is encrypted.
    A copy that fails is deregistered, so a retry starts clean. With `wait=False` the copy may
    still be pending: the caller waits (a deferred task in the triggerer, `ImageAvailableTrigger`)
    and calls `discard_failed_copy` if it never becomes available.
    """
    settings = platform.aws_settings
    source_region = settings.build_region
    if region == source_region:
        return {"region": region, "image_id": source_image_id, "copied": False, "reused": True, "state": "available"}
    aws_region = platform.aws_region(region)
    hook = ec2(platform, region)
    try:
        enabled = hook.region_enabled()
    except Exception as exc:
        raise AwsImageError(f"region {region} cannot be reached to copy {source_image_id}: {exc}") from exc
    if not enabled:
        raise AwsImageError(
            f"region {region} is not enabled for this account, so {source_image_id} cannot be copied there; "
            "enable it (Account settings > AWS Regions) or remove it from the platform file"
        )
    source_hook = ec2(platform)
    source = source_hook.get_image(image_id=source_image_id)
    if source is None:
        raise AwsImageError(f"the AMI {source_image_id} to copy does not exist in {source_region}")
    existing = find_copy(platform, region, source_image_id)
    if existing is not None and existing.get("State") in ("available", "pending"):
        image_id = str(existing["ImageId"])
        copied = False
        log.info("%s: %s is already copied as %s (%s)", region, source_image_id, image_id, existing.get("State"))
    else:
        if existing is not None:  # failed or deregistering: start again
            hook.deregister_image(image_id=str(existing["ImageId"]))
        try:
            image_id = hook.copy_image(
                source_image_id=source_image_id,
                source_region=source_region,
                name=str(source.get("Name", source_image_id)),
                description=str(source.get("Description", "")),
                client_token=f"immutable-{source_image_id}-{region}",
                kms_key_id=aws_region.kms_key_id,
            )
        except Exception as exc:
            raise AwsImageError(f"copying {source_image_id} from {source_region} to {region} failed: {exc}") from exc
        copied = True
    tags = {k: v for k, v in source_hook.image_tags(source).items() if not k.startswith("aws:")}
    tags = {k: v for k, v in tags.items() if not k.startswith(TAG_CHANNEL)}  # channels live in the build region only
    tags |= {TAG_SOURCE_IMAGE: source_image_id, TAG_SOURCE_REGION: source_region}
    try:
        hook.create_tags(resource_ids=[image_id], tags=tags)
        if wait:
            hook.wait_image_available(image_id=image_id)
    except Exception as exc:
        raise discard_failed_copy(
            platform, region=region, source_image_id=source_image_id, image_id=image_id, copied=copied, cause=exc
        ) from exc
    image = hook.get_image(image_id=image_id) or {}
    created = _created(image)
    return {
        "region": region,
        "image_id": image_id,
        "copied": copied,
        "reused": not copied,
        "encrypted": bool(aws_region.kms_key_id),
        "state": image.get("State"),
        # When the copy began (an earlier attempt's, for a copy found pending): waits count from it.
        "started_at": created.timestamp() if created else time.time(),
    }


def discard_failed_copy(
    platform: PlatformConfig, *, region: str, source_image_id: str, image_id: str, copied: bool, cause: object
) -> AwsImageError:
    """Deregister a copy this run started that never became available (so a retry starts clean), and
    return the error that says so, for the caller to raise."""
    if copied:
        ec2(platform, region).deregister_image(image_id=image_id)
    return AwsImageError(
        f"the copy {image_id} of {source_image_id} in {region} did not become available: {cause}"
        + ("; the copy was deregistered, retry copies it again" if copied else "")
    )


# ---- retention ---------------------------------------------------------------------------------


def retention(platform: PlatformConfig, *, repository: str, now: datetime, dry_run: bool = False) -> dict[str, Any]:
    """Deregister the repository's AMIs (and their snapshots) beyond the newest `keep` and older than
    `min_age_days`, in every region; never one a launch template uses or a channel points at."""
    policy = platform.aws_settings.image_retention
    cutoff = now - timedelta(days=policy.min_age_days)
    report: dict[str, Any] = {}
    for region in [r.name for r in platform.regions]:
        hook = ec2(platform, region)
        in_use = hook.images_in_launch_templates()
        images = hook.find_images(tags={TAG_REPOSITORY: repository})
        removed, kept = [], []
        for index, image in enumerate(images):  # newest first
            image_id = str(image["ImageId"])
            tags = hook.image_tags(image)
            created = _created(image)
            reason = None
            if index < policy.keep:
                reason = f"one of the newest {policy.keep}"
            elif created is not None and created > cutoff:
                reason = f"younger than {policy.min_age_days} days"
            elif image_id in in_use:
                reason = f"used by launch template {', '.join(in_use[image_id])}"
            elif channels := [k.removeprefix(TAG_CHANNEL) for k in tags if k.startswith(TAG_CHANNEL)]:
                reason = f"the {', '.join(channels)} channel points at it"
            elif region == platform.aws_settings.build_region and _has_live_copies(platform, image_id):
                reason = "a copy of it in another region is in use"
            if reason:
                kept.append({"image_id": image_id, "why": reason})
                continue
            snapshots = [] if dry_run else hook.deregister_image(image_id=image_id)
            removed.append({"image_id": image_id, "snapshots": snapshots})
        report[region] = {"removed": removed, "kept": kept}
        log.info("retention in %s for %s: removed %s, kept %s", region, repository, removed, kept)
    return report


def _created(image: dict[str, Any]) -> datetime | None:
    try:
        created = datetime.fromisoformat(str(image["CreationDate"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _has_live_copies(platform: PlatformConfig, image_id: str) -> bool:
    """A copy of this build-region image is in a launch template of another region."""
    for region in [r.name for r in platform.regions if r.name != platform.aws_settings.build_region]:
        copy = find_copy(platform, region, image_id)
        if copy is not None and copy["ImageId"] in ec2(platform, region).images_in_launch_templates():
            return True
    return False


# ---- the app: package, bake, sign ----------------------------------------------------------------

ARTIFACT_URL_TTL_S = 3600  # seconds a presigned artifact URL stays valid for the builder
APP_DIR = "/opt/app"


def s3(platform: PlatformConfig) -> Any:
    from immutable.aws.hooks.s3 import ArtifactS3Hook

    return ArtifactS3Hook.for_region(platform, platform.aws_settings.build_region)


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
) -> str:
    """Builder from the base AMI pinned by id; install the wheel from S3; the AMI, tagged with provenance."""
    from immutable.images.app import python_version

    settings = platform.aws_settings
    region = settings.build_region
    hook = ec2(platform)
    for existing in hook.find_images(tags={TAG_REPOSITORY: spec.repository, "immutable:build-tag": build_tag}):
        if hook.image_tags(existing).get("io.immutable.airflow.run-id") == run_id:
            log.info("already baked by this run as %s; reusing it", existing["ImageId"])
            return str(existing["ImageId"])
    if hook.get_image(image_id=base_image_id) is None:
        raise AwsImageError(f"the base AMI {base_image_id} does not exist in {region}; run base_image first")
    metadata = s3(platform).artifact_metadata(bucket=artifact["bucket"], key=artifact["key"])
    if metadata is None or f"sha256:{metadata.get('sha256')}" != artifact["sha256"]:
        raise AwsImageError(
            f"artifact s3://{artifact['bucket']}/{artifact['key']} is missing or no longer matches "
            f"{artifact['sha256']}; package again"
        )
    url = s3(platform).presigned_get(bucket=artifact["bucket"], key=artifact["key"], expires_s=ARTIFACT_URL_TTL_S)
    script = app_bake_script(
        url=url,
        wheel=artifact["key"].rsplit("/", 1)[1],
        sha256_hex=artifact["sha256"].split(":", 1)[1],
        distribution=spec.packaging.distribution,
        python_version=python_version(version),
        spec=spec,
        base=base,
        version=version,
    )
    with builder_instance(
        platform, image_id=base_image_id, role="bake", run_id=run_id, repository=spec.repository
    ) as instance_id:
        result = run_script(platform, instance_id, script, f"bake {spec.name} {version}", BUILD_SCRIPT_TIMEOUT_S)
        if not result.ok:
            raise AwsImageError(
                f"installing {spec.name} {version} failed on builder {instance_id} in {region} "
                f"(SSM command {result.command_id}: {result.status}, exit {result.exit_code}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}\nThe builder is terminated; no AMI was made."
            )
        image_id = make_image(
            platform,
            instance_id=instance_id,
            name=f"{spec.repository.replace('/', '-')}-{build_tag}",
            description=f"{spec.name} {version} on {base_image_id}",
            tags=labels
            | {
                TAG_REPOSITORY: spec.repository,
                TAG_KIND: "app",
                "immutable:build-tag": build_tag,
                "Name": f"{spec.name} {version}",
            },
        )
    log.info("baked %s %s as %s in %s", spec.name, version, image_id, region)
    return image_id


def sign_image(platform: PlatformConfig, *, repository: str, image_id: str) -> str:
    """ed25519 over the AMI id and its provenance tags; the signature is stored as AMI tags."""
    from immutable.signing import load_signer

    labels = image_labels(platform, image_id)
    document = load_signer(platform).sign(repository, image_id, labels)
    ec2(platform).create_tags(resource_ids=[image_id], tags=signature_tags(document))
    return str(document["signature"])


def verify_image(platform: PlatformConfig, *, region: str | None, repository: str, image_id: str) -> dict[str, Any]:
    """Check the signature of the image (or of its copy in `region`); returns its tags and region's AMI id."""
    from immutable.signing import SignatureError, load_signer, payload, verify

    build_region = platform.aws_settings.build_region
    where = region or build_region
    if where == build_region:
        local_id: str | None = image_id
        image = ec2(platform).get_image(image_id=image_id)
    else:
        image = find_copy(platform, where, image_id)
        local_id = str(image["ImageId"]) if image else None
    if image is None:
        raise SignatureError(f"{repository} AMI {image_id} has no image in {where}; nothing to deploy")
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    signature = signature_from_tags(tags)
    document = (
        None
        if signature is None
        else {"payload": base64.b64encode(payload(repository, image_id, tags)).decode(), "signature": signature}
    )
    verify(document, repository=repository, digest=image_id, labels=tags, public_pem=load_signer(platform).public_pem())
    return {"region": where, "image_id": local_id, "labels": tags}
