"""Retention on the local platform's registries: old images deleted, their storage collected.

Per repository, in the build registry and every region's, `plan_retention` (pure) keeps the newest
`local.image_retention.keep` images and every image something needs: one a container of this
platform runs (fleets, canaries, dev and staging), one a production record names (live, kept for
rollback, the release a rollback past its window redeploys), one a channel tag names (the base's
candidate and stable), the one a release is taking out now. The rest are deleted with their
signatures (and, in the build registry, their wheel artifacts), then `registry garbage-collect`
frees their blobs.

Garbage collection must not run while something pushes: it would free the blobs of an upload
whose manifest is not written yet. Every step that writes to the registries holds a shared lock
(`registry_writes`); the collection takes it alone, and when pushes keep it busy it waits a while
and then leaves the blobs for the next time (the manifests are already gone, so nothing is lost).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from immutable.base_policy import CANDIDATE_TAG, STABLE_TAG
from immutable.config import PlatformConfig, state_dir
from immutable.registry import RegistryClient, RegistryError
from immutable.retention import StoredImage, plan_retention
from immutable.signing import artifact_tags

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

CHANNEL_TAGS = (CANDIDATE_TAG, STABLE_TAG)
GC_WAIT_S = 60.0  # how long the collection waits for pushes to finish before leaving it for next time
GC_TIMEOUT_S = 600


def registry_home(name: str) -> Path:
    """Where registry `name` (build, or a region) keeps its config and data."""
    return state_dir() / "registry" / name


def _lock_path() -> Path:
    path = state_dir() / "registry" / ".writes.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def registry_writes() -> Generator[None]:
    """Held, shared, by each step that pushes to this platform's registries."""
    with _lock_path().open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def writes_registries(method: Callable[P, T]) -> Callable[P, T]:
    """A step that pushes to the registries, run under `registry_writes`."""

    @functools.wraps(method)
    def under_lock(*args: P.args, **kwargs: P.kwargs) -> T:
        with registry_writes():
            return method(*args, **kwargs)

    return under_lock


@contextlib.contextmanager
def _no_writes(wait_s: float) -> Generator[bool]:
    """True when no push runs (and none can start) inside the block; False if pushes kept it busy."""
    with _lock_path().open("a") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.5)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


IMAGE_CONFIG_TYPES = ("application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json")


def manifest_revisions(name: str, repository: str) -> list[str]:
    """Every manifest the registry stores for the repository, tagged or not, read from its storage: a
    tag moved to a newer image (a version released again) leaves the older one reachable by digest
    only, and the registry's API lists tags, not digests."""
    revisions = registry_home(name) / "data/docker/registry/v2/repositories" / repository / "_manifests/revisions"
    return sorted(f"sha256:{path.name}" for path in revisions.glob("sha256/*") if (path / "link").exists())


def stored_images(registry: RegistryClient, repository: str, revisions: Sequence[str] = ()) -> list[StoredImage]:
    """The repository's images (not the signature artifacts beside them), with their tags and build
    times: the tagged ones, and the `revisions` no tag names any more."""
    tags_of: dict[str, list[str]] = {digest: [] for digest in revisions}
    for tag in registry.tags(repository):
        digest = registry.manifest_digest(repository, tag)
        if digest:
            tags_of.setdefault(digest, []).append(tag)
    images = []
    for digest, tags in tags_of.items():
        manifest = registry.manifest(repository, digest)
        if manifest is None or (manifest.get("config") or {}).get("mediaType") not in IMAGE_CONFIG_TYPES:
            continue  # gone meanwhile, or an artifact (a signature): it goes with its image
        config = registry.image_config(repository, digest) or {}
        images.append(StoredImage(digest=digest, created=str(config.get("created", "")), tags=tuple(sorted(tags))))
    return images


def digests_in_use(instance: str) -> dict[str, str]:
    """Digest -> why, for every image this platform's containers run. (What production records name
    comes from the caller as `protect`: the pipeline reads the records for every platform alike.)"""
    from immutable.images.engine import docker_client
    from immutable.local.fleets import LABEL_DIGEST, LABEL_INSTANCE, LABEL_ROLE

    in_use: dict[str, str] = {}
    containers = docker_client().containers.list(
        all=True, ignore_removed=True, filters={"label": [f"{LABEL_INSTANCE}={instance}"]}
    )
    for container in containers:
        digest = container.labels.get(LABEL_DIGEST)
        if digest:
            in_use.setdefault(digest, f"{container.labels.get(LABEL_ROLE, 'container')} {container.name} runs it")
    return in_use


def retain(
    config: PlatformConfig, repository: str, registries: dict[str, RegistryClient], *, protect: Sequence[str] = ()
) -> dict[str, Any]:
    """Delete what `plan_retention` lets go in each registry, then collect their storage."""
    keep = config.local.image_retention.keep
    try:
        running = digests_in_use(config.local.instance)
    except Exception as exc:  # what runs cannot be told (the engine is down): delete nothing this time
        log.warning("retention for %s skipped: what runs could not be read: %s", repository, exc)
        return {"skipped": f"what runs could not be read: {exc}"}
    in_use = running | {digest: "a release is taking it out now" for digest in protect}
    report: dict[str, Any] = {}
    for name, registry in registries.items():
        try:
            images = stored_images(registry, repository, manifest_revisions(name, repository))
            report[name] = _retain_in(registry, repository, images, keep, in_use, artifacts=name == "build")
        except RegistryError as exc:  # retention never fails a release: the images stay, the log says why
            log.warning("retention in registry %s (%s) skipped: %s", name, repository, exc)
            report[name] = {"skipped": str(exc)}
    if any(part.get("removed") for part in report.values()):
        report["garbage_collection"] = collect_garbage([n for n, part in report.items() if part.get("removed")])
    return report


def _retain_in(
    registry: RegistryClient,
    repository: str,
    images: list[StoredImage],
    keep: int,
    in_use: dict[str, str],
    *,
    artifacts: bool,
) -> dict[str, Any]:
    protected = dict(in_use)
    for image in images:
        if channels := [tag for tag in image.tags if tag in CHANNEL_TAGS]:
            protected.setdefault(image.digest, f"the {', '.join(channels)} channel names it")
    plan = plan_retention(images, keep=keep, protected=protected)
    # A version released again shares its tags with the newer image: those wheels are the newer one's.
    kept_tags = {tag for image in images if image.digest in plan.kept for tag in image.tags}
    removed = []
    for image in plan.removed:
        registry.delete_manifest(repository, image.digest)
        for beside in artifact_tags(image.digest):  # its signature and its SBOM go with it
            artifact = registry.manifest_digest(repository, beside)
            if artifact:
                registry.delete_manifest(repository, artifact)
        if artifacts:  # the wheels the version was baked from (artifacts/<app>, tagged by version)
            _delete_wheels(registry, repository, [tag for tag in image.tags if tag not in kept_tags])
        removed.append({"digest": image.digest, "tags": list(image.tags)})
    log.info("retention in %s for %s: removed %s; kept %s", registry.address, repository, removed, plan.kept)
    return {"removed": removed, "kept": plan.kept}


def _delete_wheels(registry: RegistryClient, repository: str, tags: list[str]) -> None:
    if not repository.startswith("apps/"):
        return
    artifacts = f"artifacts/{repository.removeprefix('apps/')}"
    for tag in tags:
        digest = registry.manifest_digest(artifacts, tag)
        if digest:
            registry.delete_manifest(artifacts, digest)


def disk_use(name: str) -> int:
    """Bytes the registry's storage takes on disk."""
    return sum(p.stat().st_size for p in (registry_home(name) / "data").rglob("*") if p.is_file())


def collect_garbage(names: list[str]) -> dict[str, Any]:
    """`registry garbage-collect` on each registry whose manifests were deleted, while nothing pushes."""
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        return {"skipped": "the registry binary is not installed here; blobs stay until it runs"}
    with _no_writes(GC_WAIT_S) as alone:
        if not alone:
            log.warning("garbage collection postponed: pushes kept the registries busy for %.0fs", GC_WAIT_S)
            return {"skipped": f"pushes in progress for {GC_WAIT_S:.0f}s; the next retention collects"}
        freed: dict[str, Any] = {}
        for name in names:
            before = disk_use(name)
            done = subprocess.run(
                [binary, "garbage-collect", str(registry_home(name) / "config.yml")],
                capture_output=True,
                text=True,
                timeout=GC_TIMEOUT_S,
                check=False,
            )
            if done.returncode != 0:
                log.warning("garbage collection of %s failed: %s", name, done.stderr[-500:])
                freed[name] = {"failed": done.stderr[-500:]}
                continue
            freed[name] = {"bytes_before": before, "bytes_after": disk_use(name)}
            log.info("registry %s: %d bytes before garbage collection, %d after", name, before, disk_use(name))
        return freed
