"""Release copy figures: parallel copy to 1/3/5 regions, bytes sent for an app-only change, warm bake time.

Prints figures side by side from one run; asserts nothing. Runs its own throwaway registries on
127.0.0.1 (ports from 5900 up, storage in a temporary folder), so the platform's registries are
never touched, and every region starts empty.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_images import QUICK, remove_images, say_if_quick

from immutable import provenance
from immutable.app_spec import AppSpec, app_spec
from immutable.config import BaseImageRunParams, BaseImageSpec, load_base_spec
from immutable.images import app, base
from immutable.images.engine import docker_client
from immutable.images.replicate import CopyReport, copy_image
from immutable.images.upstream import upstream_digest
from immutable.local.services import Service, port_open
from immutable.localctl import REGISTRY_CONFIG, registry_binary
from immutable.registry import RegistryClient

MB = 1_000_000
PORTS = range(5900, 6000)  # loopback ports tried for the throwaway registries
REGION_COUNTS = (1, 3) if QUICK else (1, 3, 5)
BASE_REPO = "immutable/base"
VERSIONS = ("1.0.0", "1.1.0")
RUN_ID = "bench-release-copy"


class Registries:
    """Throwaway registries, each on its own port with its own empty storage; close() stops them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, Service] = {}

    def start(self, name: str) -> str:
        taken = {service.port for service in self.running.values()}
        port = next(p for p in PORTS if p not in taken and not port_open(p))
        home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        (home / "data").mkdir()
        config = home / "config.yml"
        config.write_text(REGISTRY_CONFIG.format(root=home / "data", port=port))
        service = Service(
            name=f"registry-{name}",
            argv=[registry_binary(), "serve", str(config)],
            run_dir=home,
            ready=functools.partial(port_open, port),
            ready_timeout_s=30,
            port=port,
        )
        address = f"127.0.0.1:{port}"
        self.running[address] = service  # before start(): a half-started one is still stopped by close()
        service.start()
        return address

    def stop(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            self.running.pop(address).stop()

    def close(self) -> None:
        self.stop(list(self.running))


def build_base(spec: BaseImageSpec, build: str, created: datetime) -> tuple[str, str]:
    """A base built as the base_image DAG does, pushed to the build registry; returns (image id, digest)."""
    version = created.strftime("%Y.%m.%d.%H%M%S")
    labels = base.build_labels(
        spec=spec,
        version=version,
        created=created,
        upstream_digest=upstream_digest(spec.upstream.image),
        params=BaseImageRunParams(reason="manual"),
        run_id=RUN_ID,
    )
    image_id = base.build(spec=spec, upstream_ref=spec.upstream.image, version=version, labels=labels)
    return image_id, base.push(image_id, f"{build}/{BASE_REPO}", version)


def package_and_bake(
    spec: AppSpec, base_spec: BaseImageSpec, base_ref: str, base_digest: str, version: str, build: str
) -> tuple[str, str, float, float]:
    """Package and bake one version as the release DAG does; returns (image id, digest, package s, bake s)."""
    uid = base_spec.runtime_user.uid
    started = time.monotonic()
    with app.with_tempdir() as tmp:
        tree = app.checkout(spec, "", Path(tmp))
        source_tar = app.source_archive(tree, version, uid)
    wheels = app.build_wheels(base_ref=base_ref, source_tar=source_tar, uid=uid)
    packaged_s = time.monotonic() - started
    wheel = app.app_wheel_name(wheels, spec.packaging.distribution, version)
    labels = {
        provenance.LABEL_VERSION: version,
        provenance.LABEL_REVISION: tree.revision,
        provenance.LABEL_BASE_DIGEST: base_digest,
        provenance.LABEL_APP: spec.name,
        provenance.LABEL_ARTIFACT: app.sha256(wheels[wheel]),
        provenance.LABEL_RUN_ID: RUN_ID,
    }
    context = app.bake_context(spec=spec, base=base_spec, base_ref=base_ref, version=version, wheels=wheels)
    started = time.monotonic()
    image_id = app.bake(context=context, labels=labels, tag=f"{spec.repository}-bench:{version}")
    baked_s = time.monotonic() - started
    return image_id, base.push(image_id, f"{build}/{spec.repository}", version), packaged_s, baked_s


def copy_parallel(
    build: str, regions: list[str], repository: str, digest: str, tag: str
) -> tuple[float, list[CopyReport]]:
    """One thread per region, as the mapped copy tasks run side by side; returns (wall s, reports)."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(regions)) as pool:
        reports = list(
            pool.map(
                lambda region: copy_image(RegistryClient(build), RegistryClient(region), repository, digest, [tag]),
                regions,
            )
        )
    return time.monotonic() - started, reports


def layers(build: str, repository: str, digest: str) -> list[dict[str, Any]]:
    manifest = RegistryClient(build).manifest(repository, digest)
    assert manifest is not None, f"{repository}@{digest} vanished from {build}"
    return list(manifest["layers"])


@dataclass
class Figures:
    wall: dict[int, float] = field(default_factory=dict)
    first_copy: CopyReport | None = None
    image_bytes: int = 0
    update: list[CopyReport] = field(default_factory=list)
    update_s: float = 0.0
    app_layers: list[dict[str, Any]] = field(default_factory=list)
    base_s: float = 0.0
    package_s: dict[str, float] = field(default_factory=dict)
    bake_s: dict[str, float] = field(default_factory=dict)


def measure(registries: Registries, built: list[str]) -> Figures:
    """Everything timed in one run; image ids land in `built` as soon as they exist, for cleanup."""
    figures = Figures()
    spec = app_spec("sample")
    base_spec = load_base_spec().model_copy(update={"repository": "immutable/base-bench"})
    build = registries.start("build")
    started = time.monotonic()
    base_id, base_digest = build_base(base_spec, build, datetime.now(UTC))
    built.append(base_id)
    figures.base_s = time.monotonic() - started
    base_ref = f"{build}/{BASE_REPO}@{base_digest}"

    digests: dict[str, str] = {}
    for version in VERSIONS:
        image_id, digests[version], figures.package_s[version], figures.bake_s[version] = package_and_bake(
            spec, base_spec, base_ref, base_digest, version, build
        )
        built.insert(0, image_id)

    v1, v2 = VERSIONS
    regions: list[str] = []
    for count in REGION_COUNTS:
        registries.stop(regions)
        regions = [registries.start(f"region{i + 1}") for i in range(count)]
        figures.wall[count], reports = copy_parallel(build, regions, spec.repository, digests[v1], v1)
        figures.first_copy = reports[0]
    figures.update_s, figures.update = copy_parallel(build, regions, spec.repository, digests[v2], v2)

    base_layers = {layer["digest"] for layer in layers(build, BASE_REPO, base_digest)}
    figures.app_layers = [
        layer for layer in layers(build, spec.repository, digests[v2]) if layer["digest"] not in base_layers
    ]
    figures.image_bytes = sum(layer["size"] for layer in layers(build, spec.repository, digests[v1]))
    return figures


def report(f: Figures) -> None:
    v1, v2 = VERSIONS
    one, most = REGION_COUNTS[0], REGION_COUNTS[-1]
    assert f.first_copy is not None
    app_bytes = sum(layer["size"] for layer in f.app_layers)
    app_digests = {layer["digest"] for layer in f.app_layers}
    print(f"\nrelease copy (throwaway registries on loopback; one thread per region; {os.cpu_count()} CPUs)")
    say_if_quick()
    print(f"  {'regions':<42} " + " ".join(f"{n:>8}" for n in REGION_COUNTS))
    print(f"  {'copy wall time, empty regions (s)':<42} " + " ".join(f"{f.wall[n]:8.2f}" for n in REGION_COUNTS))
    print(f"  {f'ratio {most} regions / {one} region':<42} {f.wall[most] / max(f.wall[one], 0.001):8.2f}x")
    print(
        f"  {'first copy, bytes pushed per region':<42} {f.first_copy.bytes_pushed / MB:8.1f} MB "
        f"({len(f.first_copy.pushed_blobs)} blobs; image layers {f.image_bytes / MB:.1f} MB)"
    )
    print(f"\napp-only change ({v1} -> {v2}, same base) to {len(f.update)} regions holding {v1}")
    print(
        f"  {'app layer(s) not in the base (v' + v2 + ')':<42} {app_bytes / MB:8.3f} MB in {len(f.app_layers)} layer(s)"
    )
    for i, copied in enumerate(f.update, start=1):
        sent_layers = len(app_digests.intersection(copied.pushed_blobs))
        print(
            f"  {f'bytes pushed, region {i}':<42} {copied.bytes_pushed / MB:8.3f} MB "
            f"({len(copied.pushed_blobs)} blobs sent: {sent_layers} app layer(s) + "
            f"{len(copied.pushed_blobs) - sent_layers} other; {len(copied.skipped_blobs)} already there)"
        )
    print(f"  {'copy wall time (s)':<42} {f.update_s:8.2f}")
    print("\nbake (same engine, same base)")
    print(f"  {'base build + push (context only)':<42} {f.base_s:8.1f} s")
    for version in VERSIONS:
        print(f"  {f'package {version} (wheel build in a container)':<42} {f.package_s[version]:8.1f} s")
    print(f"  {f'bake {v1} (cold: first bake on this base)':<42} {f.bake_s[v1]:8.1f} s")
    print(f"  {f'bake {v2} (app-only change, warm cache)':<42} {f.bake_s[v2]:8.1f} s")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    client = docker_client()
    built: list[str] = []  # apps first, base last: the order they can be removed in
    try:
        with tempfile.TemporaryDirectory(prefix="bench-release-copy-") as tmp:
            registries = Registries(Path(tmp))
            try:
                figures = measure(registries, built)
            finally:
                registries.close()
        report(figures)
    finally:
        remove_images(client, built)


if __name__ == "__main__":
    main()
