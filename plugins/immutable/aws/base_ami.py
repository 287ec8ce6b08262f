"""The base AMI: built from the upstream AMI by the include/base/ scripts over SSM, tested on an
instance of its own, and probed for pending upgrades."""

from __future__ import annotations

import base64
import io
import logging
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutable.aws.amis import OCI, AwsImageError, ec2
from immutable.aws.builders import (
    BUILD_SCRIPT_TIMEOUT_S,
    CHECK_TIMEOUT_S,
    advance_script,
    ami_name,
    builder_instance,
    earlier_try,
    inventory_of,
    run_script,
    script_result,
    settle_image,
    start_image,
    start_script_on_builder,
    terminate_after_script,
    with_inventory,
)
from immutable.aws.sboms import sbom_from_listing_on_builder
from immutable.aws.tags import TAG_KIND, TAG_REPOSITORY, TAG_SBOM
from immutable.network_tuning import shipped_network_tuning

if TYPE_CHECKING:
    from immutable.aws.hooks.ssm import CommandResult
    from immutable.config import BaseImageSpec, PlatformConfig

log = logging.getLogger(__name__)

REMOTE_DIR = "/usr/local/lib/immutable-base"


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


def build_base(
    platform: PlatformConfig,
    *,
    spec: BaseImageSpec,
    upstream_image: str,
    version: str,
    labels: dict[str, str],
    run_id: str,
    context: Path,
    wait: bool = True,
) -> dict[str, Any]:
    """Builder from the upstream AMI, the base scripts over SSM, stop, AMI. Reuses this run's own image.
    Returns {"image_id", "package_list", "pending", "started_at"}: with `wait=False` the AMI may still
    be pending, its builder kept until `finish_image`."""
    settings = platform.aws_settings
    hook = ec2(platform)
    identity = {TAG_REPOSITORY: spec.repository, f"{OCI}.version": version}
    for existing in hook.find_images(tags=identity):
        tags = hook.image_tags(existing)
        if tags.get("io.immutable.airflow.run-id") == labels.get("io.immutable.airflow.run-id"):
            made = earlier_try(platform, existing, wait=wait)
            if made is None:  # it failed and is deregistered: build again
                continue
            return made | {"package_list": ""}
        raise AwsImageError(
            f"version {version} of {spec.repository} already exists in {settings.build_region} as "
            f"{existing['ImageId']} from another run; versions are never overwritten. Rerun check_updates."
        )
    script = with_inventory(base_build_script(spec, version, context), package_list=PACKAGE_LIST)
    made_of = {"repository": spec.repository, "version": version, "labels": labels, "run_id": run_id}
    if not wait:  # each wait in the triggerer: the agent, the script (`builders.advance_script`), the AMI
        stage = start_script_on_builder(
            platform,
            image_id=upstream_image,
            role="builder",
            run_id=run_id,
            repository=spec.repository,
            script=script,
            comment=f"base {version}",
            timeout_s=BUILD_SCRIPT_TIMEOUT_S,
            context=made_of,
        )
        return {"image_id": "", "package_list": "", "pending": True, "started_at": None, "builder": stage}
    with builder_instance(
        platform, image_id=upstream_image, role="builder", run_id=run_id, repository=spec.repository
    ) as instance_id:
        result = run_script(platform, instance_id, script, f"base {version}", BUILD_SCRIPT_TIMEOUT_S)
        made = image_the_builder(platform, instance_id, result, made_of)
        image_id, package_list = made["image_id"], made["package_list"]
        settle_image(platform, image_id=image_id, name=ami_name(spec.repository, version))
    log.info("built %s %s as %s in %s", spec.repository, version, image_id, settings.build_region)
    return {"image_id": image_id, "package_list": package_list, "pending": False, "started_at": None}


def image_the_builder(
    platform: PlatformConfig, instance_id: str, result: CommandResult, made_of: dict[str, Any]
) -> dict[str, Any]:
    """After the base scripts: refuse a failed run; read the package list and the SBOM; stop the
    builder and start its AMI, tagged. Returns {"image_id", "package_list", "started_at"}."""
    repository, version = made_of["repository"], made_of["version"]
    for line in inventory_of(result.stdout)[0].splitlines()[-200:]:
        log.info("build: %s", line)
    if not result.ok:
        raise AwsImageError(
            f"the base scripts failed on builder {instance_id} in {platform.aws_settings.build_region} "
            f"(SSM command {result.command_id}: {result.status}, exit {result.exit_code}):\n"
            f"{(result.stdout + result.stderr)[-3000:]}\nThe builder is terminated; no AMI was made. "
            "Fix the failing script under include/base/scripts/ and rerun."
        )
    _, listing, package_list = inventory_of(result.stdout)
    sbom = sbom_from_listing_on_builder(
        platform,
        listing=listing,
        repository=repository,
        describes=f"{version}@{made_of['run_id']}",
        labels=made_of["labels"],
    )
    started_at = time.time()
    image_id = start_image(
        platform,
        instance_id=instance_id,
        name=ami_name(repository, version),
        description=f"{repository} {version}",
        tags=made_of["labels"]
        | {TAG_REPOSITORY: repository, TAG_KIND: "base", TAG_SBOM: sbom, "Name": f"{repository} {version}"},
    )
    return {"image_id": image_id, "package_list": package_list, "started_at": started_at}


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
        # Booted from the new AMI, systemd-sysctl has applied the drop-in: the kernel's values are read.
        "wrong=''",
        *(
            f"v=$(sysctl -n {key} 2>/dev/null | tr -s ' \\t' ' '); "
            f'[ "$v" = "{value}" ] || wrong="$wrong {key}=${{v:-missing}}(expected {value.replace(" ", "_")})"'
            for key, value in shipped_network_tuning().items()
        ),
        'report $([ -z "$wrong" ] && echo 0 || echo 1) sysctl-applied "${wrong:-every setting of the drop-in}"',
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


def start_test_base(platform: PlatformConfig, *, spec: BaseImageSpec, image_id: str, run_id: str) -> dict[str, Any]:
    """A test instance from the new AMI, to run the checks of the base's promises: its agent and then
    the checks are waited for in the triggerer (`builders.script_waiter`), then `finish_test_base`."""
    stage = start_script_on_builder(
        platform,
        image_id=image_id,
        role="base-test",
        run_id=run_id,
        repository=spec.repository,
        script=base_checks_script(spec),
        comment="base checks",
        timeout_s=CHECK_TIMEOUT_S,
        context={},
    )
    return {"ssm": stage}


def finish_test_base(platform: PlatformConfig, running: dict[str, Any]) -> dict[str, Any]:
    """After a wait: the next stage, or once the checks have ended the test instance terminated and
    their results ({"checks": [...]}). Any failure on the way terminates the instance too."""
    stage = advance_script(platform, running["ssm"])
    if stage["stage"] != "done":
        return {"ssm": stage}
    terminate_after_script(platform, stage)
    return {"checks": [asdict(check) for check in parse_checks(script_result(stage))]}


def start_pending_upgrades(platform: PlatformConfig, *, repository: str, image_id: str, run_id: str) -> dict[str, Any]:
    """A probe instance of the AMI, to list the packages with an upgrade in the archive now: its agent
    and then the listing are waited for in the triggerer, then `finish_pending_upgrades`."""
    stage = start_script_on_builder(
        platform,
        image_id=image_id,
        role="upgrade-probe",
        run_id=run_id,
        repository=repository,
        script=["apt-get update -qq >/dev/null && apt list --upgradable 2>/dev/null"],
        comment="pending upgrades",
        timeout_s=CHECK_TIMEOUT_S,
        context={"image_id": image_id},
    )
    return {"ssm": stage}


def finish_pending_upgrades(platform: PlatformConfig, running: dict[str, Any]) -> dict[str, Any]:
    """After a wait: the next stage, or once the listing has ended the probe terminated and the
    packages with an upgrade ({"upgradable": [...]}). Any failure terminates the probe too."""
    from immutable.base_policy import parse_upgradable

    stage = advance_script(platform, running["ssm"])
    if stage["stage"] != "done":
        return {"ssm": stage}
    terminate_after_script(platform, stage)
    result = script_result(stage)
    if not result.ok:
        raise AwsImageError(
            f"could not list pending upgrades on an instance of {stage['context']['image_id']} in "
            f"{platform.aws_settings.build_region} (SSM {result.status}): {(result.stdout + result.stderr)[-1500:]}"
        )
    return {"upgradable": parse_upgradable(result.stdout)}
