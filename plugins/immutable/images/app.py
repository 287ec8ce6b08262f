"""Package an app (a wheel, built in a container from the base image) and bake it onto the base.

The wheel travels through the build registry as an OCI artifact, so packaging and baking may run
on different workers; the artifact's sha256 is the wheel blob's digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutable.app_spec import AppSpec
from immutable.config import BaseImageSpec
from immutable.images.engine import MANAGED_LABEL, docker_client
from immutable.registry import RegistryClient

log = logging.getLogger(__name__)

WHEEL_MEDIA_TYPE = "application/vnd.immutable.python.wheel"
ARTIFACT_TYPE = "application/vnd.immutable.app.artifact.v1"
SOURCE_EXCLUDES = {".git", "__pycache__", "build", "dist", ".venv"}
BUILD_TIMEOUT_S = 900  # seconds for the wheel build container
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BUILD_CA_NAME = "build-ca.crt"


class PackagingError(RuntimeError):
    pass


@dataclass(frozen=True)
class SourceTree:
    directory: Path
    revision: str
    description: str


def checkout(spec: AppSpec, ref: str, workdir: Path) -> SourceTree:
    """The source to package: the repo folder as it is, or a clone of the git URL at `ref`."""
    from immutable.images.base import project_revision

    if spec.source.path is not None:
        directory = spec.source.local_dir()
        assert directory is not None
        return SourceTree(directory, project_revision(), spec.source.path)
    git = spec.source.git
    assert git is not None
    wanted = ref or git.ref
    target = workdir / "checkout"
    try:
        subprocess.run(["git", "init", "-q", str(target)], check=True, capture_output=True, timeout=60)
        subprocess.run(
            ["git", "-C", str(target), "fetch", "-q", "--depth", "1", git.url, wanted],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        subprocess.run(
            ["git", "-C", str(target), "checkout", "-q", "FETCH_HEAD"], check=True, capture_output=True, timeout=60
        )
        revision = subprocess.run(
            ["git", "-C", str(target), "rev-parse", "HEAD"], check=True, capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except subprocess.CalledProcessError as exc:
        raise PackagingError(f"cannot fetch {git.url} at '{wanted}': {(exc.stderr or '').strip()[-500:]}") from exc
    return SourceTree(target, revision, f"{git.url}@{wanted}")


PRE_RELEASE = re.compile(r"^(alpha|a|beta|b|rc|c)[.-]?(\d*)$")
PEP440_PRE = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "rc": "rc", "c": "rc"}


def python_version(semver: str) -> str:
    """The release's semantic version as a PEP 440 version, which Python packaging requires.

    1.2.0 stays 1.2.0; 1.2.0-rc.1 becomes 1.2.0rc1; any other pre-release label becomes a local
    version label (1.2.0-hotfix.2 becomes 1.2.0+hotfix.2). The image still reports the semver.
    """
    core, _, pre = semver.partition("-")
    if not pre:
        return core
    match = PRE_RELEASE.match(pre)
    if match:
        return f"{core}{PEP440_PRE[match.group(1)]}{match.group(2) or 0}"
    return f"{core}+{re.sub(r'[^A-Za-z0-9]+', '.', pre).strip('.').lower()}"


def source_archive(tree: SourceTree, version: str, uid: int) -> bytes:
    """A tar of the source under src/, owned by the build user, with VERSION set to the release's."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            if any(part in SOURCE_EXCLUDES for part in Path(info.name).parts):
                return None
            info.uid = info.gid = uid
            info.uname = info.gname = ""
            return info

        tar.add(tree.directory, arcname="src", filter=owned)
        data = f"{python_version(version)}\n".encode()
        info = tarfile.TarInfo("src/VERSION")
        info.size, info.uid, info.gid, info.mode = len(data), uid, uid, 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def package_key(source_tar: bytes, base_digest: str) -> str:
    """A tag naming what a package is made of: the source's files (names, modes, contents, the
    release's VERSION among them) and the base its wheels are built on. Not the archive's own bytes:
    those differ by the files' times alone. The same key means the same inputs, so the wheels stored
    under it can stand for a new build."""
    digest = hashlib.sha256(base_digest.encode())
    with tarfile.open(fileobj=io.BytesIO(source_tar)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            digest.update(f"{member.name}\0{member.mode:o}\0{member.type.decode()}\0{member.size}\0".encode())
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                digest.update(extracted.read())
    return f"src-{digest.hexdigest()[:40]}"


def build_trust_archive() -> bytes | None:
    """The build host's CA bundle, so builds trust what the host trusts (a TLS-inspecting proxy, say).

    IMMUTABLE_BUILD_CA_BUNDLE names another file; empty disables it.
    """
    configured = os.environ.get("IMMUTABLE_BUILD_CA_BUNDLE", HOST_CA_BUNDLE)
    if not configured or not Path(configured).is_file():
        return None
    data = Path(configured).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(BUILD_CA_NAME)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_wheels(*, base_ref: str, source_tar: bytes, uid: int) -> dict[str, bytes]:
    """Run `pip wheel` in a throwaway container from the base image; returns {file name: bytes}."""
    client = docker_client(timeout_s=BUILD_TIMEOUT_S)
    trust = build_trust_archive()
    ca_env = (
        {"PIP_CERT": f"/tmp/{BUILD_CA_NAME}", "SSL_CERT_FILE": f"/tmp/{BUILD_CA_NAME}"} if trust is not None else {}
    )
    script = (
        "set -e; mkdir -p /tmp/out; python3 -m venv /tmp/build; "
        "/tmp/build/bin/pip wheel --no-cache-dir --disable-pip-version-check -q --wheel-dir /tmp/out /tmp/src; "
        "ls -l /tmp/out"
    )
    container = client.containers.create(
        base_ref,
        ["sh", "-c", script],
        user=str(uid),
        environment=ca_env,
        labels={MANAGED_LABEL: "true", "io.immutable.role": "package"},
    )
    try:
        container.put_archive("/tmp", source_tar)
        if trust is not None:
            container.put_archive("/tmp", trust)
        container.start()
        result = container.wait(timeout=BUILD_TIMEOUT_S)
        output = container.logs().decode(errors="replace")
        for line in output.splitlines():
            log.info("package: %s", line)
        if result.get("StatusCode") != 0:
            raise PackagingError(
                f"the wheel build failed (exit {result.get('StatusCode')}) in a container from {base_ref}:\n"
                f"{output[-2000:]}\nFix the app's packaging (pyproject.toml) and trigger the release again."
            )
        stream, _ = container.get_archive("/tmp/out")
        archive = io.BytesIO(b"".join(stream))
    finally:
        container.remove(force=True)
    wheels: dict[str, bytes] = {}
    with tarfile.open(fileobj=archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".whl"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                wheels[Path(member.name).name] = extracted.read()
    return wheels


def app_wheel_name(wheels: dict[str, bytes], distribution: str, version: str) -> str:
    prefix = f"{distribution.replace('-', '_').lower()}-{python_version(version)}-"
    matches = [name for name in wheels if name.lower().startswith(prefix)]
    if len(matches) != 1:
        raise PackagingError(
            f"expected one wheel for {distribution} {version}, the build produced {sorted(wheels)}; "
            "check `packaging.distribution` in the app spec"
        )
    return matches[0]


def push_wheels(registry: RegistryClient, repository: str, tag: str, wheels: dict[str, bytes], app_wheel: str) -> str:
    files = [
        (
            data,
            WHEEL_MEDIA_TYPE,
            {"org.opencontainers.image.title": name, "io.immutable.app.wheel": str(name == app_wheel).lower()},
        )
        for name, data in sorted(wheels.items())
    ]
    return registry.push_artifact(repository, tag, files, ARTIFACT_TYPE)


def fetch_wheels(registry: RegistryClient, repository: str, digest: str) -> dict[str, bytes]:
    manifest = registry.manifest(repository, digest)
    if manifest is None:
        raise PackagingError(f"artifact {repository}@{digest} is not in {registry.address}; run package again")
    return {
        layer["annotations"]["org.opencontainers.image.title"]: registry.blob(repository, layer["digest"])
        for layer in manifest["layers"]
    }


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def bake_context(*, spec: AppSpec, base: BaseImageSpec, base_ref: str, version: str, wheels: dict[str, bytes]) -> bytes:
    """Dockerfile and wheels as a tar. Two stages, so the wheels never land in a layer of the image."""
    user = base.runtime_user
    # The app's venv has no pip or setuptools (nothing the service needs; less to ship to every
    # region): a throwaway tools venv installs into it.
    dockerfile = f"""FROM {base_ref} AS install
USER root
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /tmp/tools && python3 -m venv --without-pip /opt/app \\
 && /tmp/tools/bin/pip --python /opt/app/bin/python install --no-cache-dir --disable-pip-version-check \\
      --no-index --find-links /tmp/wheels "{spec.packaging.distribution}=={python_version(version)}"

FROM {base_ref}
COPY --from=install --chown=0:0 /opt/app /opt/app
USER {user.name}
ENV PORT={spec.runtime.port} APP_VERSION={version}
EXPOSE {spec.runtime.port}
CMD {json.dumps(spec.runtime.command)}
"""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("Dockerfile", dockerfile.encode())] + [
            (f"wheels/{n}", d) for n, d in sorted(wheels.items())
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def bake(*, context: bytes, labels: dict[str, str], tag: str) -> str:
    """Build the app image; returns the local image id. The install stage's image is removed after."""
    client = docker_client(timeout_s=BUILD_TIMEOUT_S)
    image_id: str | None = None
    recent: list[str] = []
    stage_images: list[str] = []  # the last image of each finished stage, from "---> <id>" lines
    last_step_image: str | None = None
    for chunk in client.api.build(
        fileobj=io.BytesIO(context), custom_context=True, labels=labels, tag=tag, rm=True, forcerm=True, decode=True
    ):
        if "stream" in chunk and chunk["stream"].strip():
            line = chunk["stream"].rstrip()
            log.info("bake: %s", line)
            recent = [*recent, line][-30:]
            if line.startswith(" ---> ") and not line.startswith(" ---> Running"):
                last_step_image = line.removeprefix(" ---> ").strip()
            if " : FROM " in line and last_step_image is not None:
                stage_images.append(last_step_image)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if "error" in chunk:
            raise PackagingError(f"bake failed: {chunk['error'].strip()}\n" + "\n".join(recent))
    if image_id is None:
        raise PackagingError("bake ended without an image id; see the bake output above")
    for stage_image in stage_images:
        _remove_if_dangling(client, stage_image)
    return image_id


def _remove_if_dangling(client: Any, image: str) -> None:
    """An intermediate stage image nobody tags would otherwise stay behind after every bake."""
    import docker

    try:
        if not client.images.get(image).tags:
            client.images.remove(image, noprune=False)
    except docker.errors.APIError as exc:  # in use by another build, or already gone: leave it
        log.info("kept intermediate image %s: %s", image, exc.explanation)


def image_labels(image_id: str) -> dict[str, Any]:
    return dict(docker_client().images.get(image_id).labels or {})


def with_tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="immutable-package-")
