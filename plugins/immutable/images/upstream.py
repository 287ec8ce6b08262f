"""The upstream distribution image: pulled where a registry answers, else made from Debian's archive."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from immutable.apt_sources import archive_mirror, host_sources
from immutable.config import BaseImageSpec
from immutable.images.engine import docker_client

log = logging.getLogger(__name__)

# Files a slim image leaves out; removed after debootstrap so our stand-in matches it in spirit.
SLIM_REMOVE = ["var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"]


def upstream_digest(image_ref: str) -> str:
    """The digest the base is built from. Where the image's registry answers, the tag's digest there
    now: a newer upstream published under the same tag is pulled, so the build uses it and the
    rebuild decision sees it. Else the engine's copy: its registry digest if it was pulled, else its
    image id (built from Debian's archive)."""
    import docker

    client = docker_client()
    try:
        current = str(client.images.get_registry_data(image_ref).id)
    except docker.errors.APIError as exc:
        log.info("the registry of %s did not answer (%s); using the engine's copy", image_ref, exc.explanation)
    else:
        if current not in _repo_digests(client, image_ref):
            log.info("upstream %s is now %s in its registry: pulling it", image_ref, current)
            client.images.pull(image_ref)
        return current
    try:
        image = client.images.get(image_ref)
    except docker.errors.ImageNotFound:
        raise LookupError(
            f"upstream image {image_ref} is not in the Docker engine; run `make setup` to pull or build it"
        ) from None
    for repo_digest in image.attrs.get("RepoDigests") or []:
        return str(repo_digest.split("@", 1)[1])
    return str(image.id)


def _repo_digests(client: Any, image_ref: str) -> list[str]:
    import docker

    try:
        image = client.images.get(image_ref)
    except docker.errors.ImageNotFound:
        return []
    return [str(d.split("@", 1)[1]) for d in image.attrs.get("RepoDigests") or []]


def ensure_upstream(spec: BaseImageSpec) -> str:
    """Make sure the upstream image exists; returns what was done."""
    import docker

    client = docker_client()
    ref = spec.upstream.image
    try:
        client.images.get(ref)
        return f"{ref} already present"
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(ref)
        return f"{ref} pulled"
    except docker.errors.APIError as exc:
        log.info("cannot pull %s (%s); building it from Debian's archive", ref, exc.explanation)
    build_from_archive(ref, spec.upstream.suite)
    return f"{ref} built from Debian's archive with debootstrap"


def build_from_archive(ref: str, suite: str) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError(
            f"cannot pull {ref} and debootstrap is not installed; install it (apt-get install debootstrap) "
            "or make the image available to the Docker engine"
        )
    mirror = archive_mirror(host_sources(), suite)
    repository, tag = ref.rsplit(":", 1)
    with tempfile.TemporaryDirectory(prefix="immutable-upstream-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log_path = Path(tmp) / "debootstrap.log"
        with open(log_path, "wb") as out:
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", suite, str(rootfs), mirror], stdout=out, stderr=subprocess.STDOUT
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"debootstrap {suite} from {mirror} failed (exit {done.returncode}):\n"
                + log_path.read_text(errors="replace")[-2000:]
            )
        for relative in SLIM_REMOVE:
            target = rootfs / relative
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    elif child.name != "lock":
                        child.unlink()
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        client = docker_client()
        client.api.import_image_from_file(str(archive), repository=repository, tag=tag, changes=['CMD ["bash"]'])
