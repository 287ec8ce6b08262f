"""Build, test, describe and publish the base image. Called by the base_image DAG's tasks.

Every function is safe to run twice: builds reuse the engine's cache for the same version,
publishing checks the registry before pushing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from immutable.apt_sources import host_sources, render_for_image
from immutable.base_policy import (  # re-exported: the base image's records are pure, here for its callers
    CANDIDATE_TAG,
    STABLE_TAG,
    BaseImageError,
    CandidateInfo,
    CheckResult,
    format_checks,
    parse_package_manifest,
    parse_upgradable,
    write_manifest,
)
from immutable.config import BaseImageSpec, PlatformConfig
from immutable.images.engine import docker_client, run_in_image
from immutable.network_tuning import (
    SYSCTL_FILE,
    SysctlSyntaxError,
    differences,
    parse_drop_in,
    shipped_network_tuning,
)
from immutable.paths import BASE_CONTEXT_DIR
from immutable.provenance import (  # re-exported: the same keys on every platform
    LABEL_BASE_DIGEST,
    LABEL_BASE_NAME,
    LABEL_CREATED,
    LABEL_CVES,
    LABEL_FAST_TRACK,
    LABEL_REASON,
    LABEL_REVISION,
    LABEL_RUN_ID,
    LABEL_SOURCE,
    LABEL_VERSION,
    OCI,
    build_labels,
    project_revision,
)
from immutable.registry import RegistryClient

log = logging.getLogger(__name__)

# Besides its own functions, this module keeps importable the base's records and provenance
# keys, which are defined in the pure modules (base_policy, provenance).
__all__ = [
    "CANDIDATE_TAG",
    "LABEL_BASE_DIGEST",
    "LABEL_BASE_NAME",
    "LABEL_CREATED",
    "LABEL_CVES",
    "LABEL_FAST_TRACK",
    "LABEL_REASON",
    "LABEL_REVISION",
    "LABEL_RUN_ID",
    "LABEL_SOURCE",
    "LABEL_VERSION",
    "OCI",
    "STABLE_TAG",
    "BaseImageError",
    "CandidateInfo",
    "CheckResult",
    "Published",
    "build",
    "build_labels",
    "current_candidate",
    "format_checks",
    "package_manifest",
    "pending_upgrades",
    "project_revision",
    "publish",
    "pull_candidate",
    "push",
    "test_image",
    "write_manifest",
]

PACKAGE_LIST_FILE = "/usr/share/immutable/packages.tsv"


def current_candidate(spec: BaseImageSpec, platform: PlatformConfig) -> CandidateInfo:
    registry = RegistryClient(platform.build_registry)
    labels = registry.labels(spec.repository, CANDIDATE_TAG)
    if labels is None:
        return CandidateInfo(None, None, None)
    return CandidateInfo(
        version=labels.get(LABEL_VERSION),
        digest=registry.manifest_digest(spec.repository, CANDIDATE_TAG),
        upstream_digest=labels.get(LABEL_BASE_DIGEST),
    )


def pending_upgrades(image_ref: str) -> list[str]:
    """Packages in `image_ref` with an upgrade available in the archive right now."""
    client = docker_client()
    sources = render_for_image(host_sources(), _suite_of(client, image_ref))
    script = (
        'printf "%s\\n" "$APT_SOURCES" > /etc/apt/sources.list.d/debian.sources && rm -f /etc/apt/sources.list && '
        "apt-get update -qq >/dev/null && apt list --upgradable 2>/dev/null"
    )
    code, output = run_in_image(
        client, image_ref, ["sh", "-c", script], user="root", environment={"APT_SOURCES": sources}
    )
    if code != 0:
        raise BaseImageError(
            f"could not list pending upgrades in {image_ref} (exit {code}); is Debian's archive reachable "
            f"from containers? Output:\n{output[-1500:]}"
        )
    return parse_upgradable(output)


def _suite_of(client: Any, image_ref: str) -> str:
    code, output = run_in_image(
        client, image_ref, ["sh", "-c", ". /etc/os-release && echo $VERSION_CODENAME"], user="root"
    )
    if code != 0 or not output.strip():
        raise BaseImageError(f"cannot read /etc/os-release in {image_ref}: {output[-500:]}")
    return output.strip().splitlines()[-1]


def pull_candidate(spec: BaseImageSpec, platform: PlatformConfig, digest: str) -> str:
    client = docker_client()
    ref = f"{platform.build_registry}/{spec.repository}@{digest}"
    client.images.pull(ref)
    return ref


def build(
    *,
    spec: BaseImageSpec,
    upstream_ref: str,
    version: str,
    labels: dict[str, str],
    context: Path = BASE_CONTEXT_DIR,
    nocache: bool = False,
) -> str:
    """Build the base image; returns the local image id. Streams the build log to the task log."""
    client = docker_client(timeout_s=3600)
    build_args = {
        "UPSTREAM": upstream_ref,
        "APT_SOURCES": render_for_image(host_sources(), spec.upstream.suite),
        "REMOVE_PACKAGES": " ".join(spec.remove_packages),
        "COMMON_PACKAGES": " ".join(spec.common_packages),
        "SETUID_ALLOWLIST": " ".join(spec.setuid_allowlist),
        "RUNTIME_USER": spec.runtime_user.name,
        "RUNTIME_UID": str(spec.runtime_user.uid),
        "BUILD_VERSION": version,
        "BUILD_RUN": labels.get(LABEL_RUN_ID, ""),
    }
    tag = f"{spec.repository}:{version}"
    image_id: str | None = None
    recent: list[str] = []
    for chunk in client.api.build(
        path=str(context),
        buildargs=build_args,
        labels=labels,
        tag=tag,
        rm=True,
        forcerm=True,
        decode=True,
        nocache=nocache,
    ):
        if "stream" in chunk:
            line = chunk["stream"].rstrip()
            if line:
                log.info("build: %s", line)
                recent = [*recent, line][-40:]
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if "error" in chunk:
            raise BaseImageError(
                f"base image build failed: {chunk['error'].strip()}\nlast build output:\n"
                + "\n".join(recent)
                + "\nFix the failing script under include/base/scripts/ (or the package lists in base.yaml) and rerun."
            )
    if image_id is None:
        raise BaseImageError("base image build ended without an image id; see the build output above")
    return image_id


def test_image(image_ref: str, spec: BaseImageSpec) -> list[CheckResult]:
    """Run containers from the image and check every promise of the base. Never raises on a failed check."""
    client = docker_client()
    results: list[CheckResult] = []

    def check(name: str, script: str, judge: Any, user: str = "root") -> None:
        code, output = run_in_image(client, image_ref, ["sh", "-c", script], user=user)
        passed, detail = judge(code, output)
        results.append(CheckResult(name, passed, detail))

    sources = render_for_image(host_sources(), spec.upstream.suite).replace("'", "")
    check(
        "no-pending-upgrades",
        f"printf '%s\\n' '{sources}' > /etc/apt/sources.list.d/debian.sources && rm -f /etc/apt/sources.list && "
        "apt-get update -qq >/dev/null && apt list --upgradable 2>/dev/null",
        lambda code, out: (
            code == 0 and not parse_upgradable(out),
            f"pending: {parse_upgradable(out)}" if code == 0 else f"apt failed (exit {code}): {out[-800:]}",
        ),
    )
    for package in spec.remove_packages:
        check(
            f"removed:{package}",
            f"dpkg-query -W -f='${{Status}}' {package} 2>/dev/null || true",
            lambda code, out, p=package: ("ok installed" not in out, f"{p} status: {out.strip() or 'absent'}"),
        )
    for package in spec.common_packages:
        check(
            f"common-library:{package}",
            f"dpkg-query -W -f='${{Status}} ${{Version}}' {package}",
            lambda code, out, p=package: (code == 0 and "ok installed" in out, f"{p}: {out.strip() or 'absent'}"),
        )
    allowed = set(spec.setuid_allowlist)
    check(
        "setuid-audit",
        r"find / -xdev -type f \( -perm -4000 -o -perm -2000 \) 2>/dev/null || true",
        lambda code, out: (
            not (extra := sorted(set(out.split()) - allowed)),
            f"setuid/setgid files outside the allowlist: {extra}"
            if extra
            else "no setuid/setgid files outside the allowlist",
        ),
    )
    user = spec.runtime_user
    check(
        "runtime-user",
        "id -u; id -un",
        lambda code, out: (
            code == 0 and out.split() == [str(user.uid), user.name],
            f"default user is {out.split()} (expected uid {user.uid}, name {user.name})",
        ),
        user="",  # the image's own default user
    )
    check(
        "root-locked",
        "passwd -S root; getent passwd root",
        lambda code, out: (
            code == 0 and " L " in out and out.strip().endswith("/usr/sbin/nologin"),
            out.strip(),
        ),
    )
    check("sysctl-drop-in", f"cat {SYSCTL_FILE}", judge_drop_in)
    check(
        "package-list",
        f"test -s {PACKAGE_LIST_FILE} && wc -l < {PACKAGE_LIST_FILE}",
        lambda code, out: (code == 0, f"{PACKAGE_LIST_FILE}: {out.strip() or 'missing'} packages"),
    )
    return results


def judge_drop_in(code: int, out: str) -> tuple[bool, str]:
    """The image's drop-in sets every key of the shipped one to the same value, and nothing else."""
    if code != 0:
        return False, f"{SYSCTL_FILE}: missing ({out.strip()[-200:]})"
    expected = shipped_network_tuning()
    try:
        wrong = differences(expected, parse_drop_in(out))
    except SysctlSyntaxError as exc:
        return False, f"{SYSCTL_FILE}: {exc}"
    if wrong:
        return False, f"{SYSCTL_FILE}: " + "; ".join(wrong)
    return True, f"{SYSCTL_FILE}: all {len(expected)} settings as shipped"


def package_manifest(image_ref: str) -> dict[str, dict[str, str]]:
    client = docker_client()
    code, output = run_in_image(client, image_ref, ["cat", PACKAGE_LIST_FILE], user="root")
    if code != 0:
        raise BaseImageError(f"{image_ref} has no package list at {PACKAGE_LIST_FILE}: {output[-500:]}")
    return parse_package_manifest(output)


def push(image_ref: str, repository: str, tag: str) -> str:
    """Push `image_ref` as `repository:tag`; returns the manifest digest the registry stored."""
    client = docker_client(timeout_s=3600)
    image = client.images.get(image_ref)
    image.tag(repository, tag=tag)
    digest: str | None = None
    for chunk in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in chunk:
            raise BaseImageError(f"push of {repository}:{tag} failed: {chunk['error']}")
        if chunk.get("status") in ("Pushed", "Layer already exists"):
            log.info("push %s: %s", chunk.get("id"), chunk["status"])
        if "aux" in chunk and "Digest" in chunk["aux"]:
            digest = chunk["aux"]["Digest"]
    if digest is None:
        raise BaseImageError(f"push of {repository}:{tag} reported no digest")
    return digest


@dataclass(frozen=True)
class Published:
    version: str
    digest: str
    image: str
    reused: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def publish(*, image_id: str, spec: BaseImageSpec, platform: PlatformConfig, version: str) -> Published:
    """Push the version tag, then move `candidate` to that digest. Older versions stay."""
    registry = RegistryClient(platform.build_registry)
    repository = f"{platform.build_registry}/{spec.repository}"
    existing = registry.manifest_digest(spec.repository, version)
    reused = False
    if existing is not None:
        labels = registry.labels(spec.repository, version) or {}
        local_labels = docker_client().images.get(image_id).labels or {}
        if labels.get(LABEL_RUN_ID) != local_labels.get(LABEL_RUN_ID):
            raise BaseImageError(
                f"version {version} is already in {repository} from another run "
                f"({labels.get(LABEL_RUN_ID)}); versions are never overwritten. Rerun check_updates for a new version."
            )
        digest, reused = existing, True
        log.info("version %s already pushed by this run as %s", version, digest)
    else:
        digest = push(image_id, repository, version)
    if registry.manifest_digest(spec.repository, CANDIDATE_TAG) != digest:
        moved = push(image_id, repository, CANDIDATE_TAG)
        if moved != digest:
            raise BaseImageError(f"candidate tag points at {moved}, expected {digest}; rerun publish")
    return Published(version=version, digest=digest, image=f"{repository}@{digest}", reused=reused)
