"""Fault drill: a region's registry runs out of disk in the middle of a copy.

The registry's storage is a small ext4 file system (a loop mount, as root) filled so that the copy
runs out of space at its first large layer. The copy fails with "no space left on device" first;
once space is freed, the retry sends only what had not arrived, and what the region serves then
is the very image, blob by blob."""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform")]

DRILL_PORT = 5695  # beside the test platform's registries (5600-5603)
DISK_MARGIN_MIB = 32  # on top of twice the image: what arrived, the failed attempts' partial uploads, the rest
BIG_BLOB_BYTES = 2 * 2**20  # the copy should run out of space on the first blob at least this large


def run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=60)


@pytest.fixture()
def small_disk_registry(base_candidate: str, tmp_path: Path) -> Iterator[tuple[object, Path]]:
    from immutable.config import load_base_spec, load_platform
    from immutable.local.services import Service, port_open
    from immutable.localctl import REGISTRY_CONFIG, registry_binary
    from immutable.registry import RegistryClient

    require("root, for a loop-mounted file system", os.geteuid() == 0, "run the drill as root (CI does)")
    manifest = RegistryClient(load_platform().build_registry).manifest(load_base_spec().repository, base_candidate)
    assert manifest is not None
    image_bytes = sum(b["size"] for b in [manifest["config"], *manifest["layers"]])
    image, mount = tmp_path / "disk.img", tmp_path / "storage"
    mount.mkdir()
    with image.open("wb") as disk:
        disk.truncate(2 * image_bytes + DISK_MARGIN_MIB * 2**20)
    run("mkfs.ext4", "-q", "-m", "0", str(image))  # no blocks kept for root: the registry runs as root here
    run("mount", "-o", "loop", str(image), str(mount))
    config = tmp_path / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=mount, port=DRILL_PORT))
    service = Service(
        name="registry-full-disk-drill",
        argv=[registry_binary(), "serve", str(config)],
        run_dir=tmp_path,
        ready=functools.partial(port_open, DRILL_PORT),
        ready_timeout_s=30,
        port=DRILL_PORT,
    )
    service.start()
    try:
        yield RegistryClient(f"127.0.0.1:{DRILL_PORT}"), mount
    finally:
        service.stop()
        for _ in range(20):
            if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_registry_fails_with_the_cause_first_then_recovers_without_resending(
    base_candidate: str, small_disk_registry: tuple[object, Path]
) -> None:
    from immutable.config import load_base_spec, load_platform
    from immutable.images.replicate import CopyError, copy_with_retries
    from immutable.registry import RegistryClient

    target, mount = small_disk_registry
    assert isinstance(target, RegistryClient)
    repository = load_base_spec().repository
    build = RegistryClient(load_platform().build_registry)
    manifest = build.manifest(repository, base_candidate)
    assert manifest is not None
    blobs = [manifest["config"], *manifest["layers"]]
    big = next((n for n, b in enumerate(blobs) if b["size"] >= BIG_BLOB_BYTES), None)
    assert big is not None, f"no blob of {BIG_BLOB_BYTES} bytes or more in {repository}: {blobs}"
    before_big = sum(b["size"] for b in blobs[:big])
    stats = os.statvfs(mount)
    free = stats.f_bavail * stats.f_frsize
    # Room for every blob before the big one (and the registry's small files), and half the big one.
    room = before_big + 2**20 + blobs[big]["size"] // 2
    assert free > room, f"the drill disk is too small for this image: {free} < {room}"
    filler = mount / "filler"
    with filler.open("wb") as out:
        os.posix_fallocate(out.fileno(), 0, free - room)

    with pytest.raises(CopyError) as failed:
        copy_with_retries(
            build, target, repository, base_candidate, ["drill"], region="drill", attempts=2, backoff_s=0.1
        )
    message = str(failed.value)
    assert message.startswith("no space left on device: copying"), message[:600]
    arrived = {b["digest"] for b in blobs if target.blob_exists(repository, b["digest"])}
    assert blobs[0]["digest"] in arrived and blobs[big]["digest"] not in arrived, arrived
    assert target.manifest_digest(repository, base_candidate) is None  # nothing half-published

    filler.unlink()  # the operator frees space, then clears the task
    report = copy_with_retries(
        build, target, repository, base_candidate, ["drill"], region="drill", attempts=2, backoff_s=0.1
    )
    assert arrived <= set(report.skipped_blobs), (arrived, report)
    assert not arrived & set(report.pushed_blobs), report
    assert target.manifest_digest(repository, base_candidate) == base_candidate
    for blob in blobs:  # nothing corrupt: every blob reads back and matches its digest
        assert len(target.blob(repository, blob["digest"])) == blob["size"]
