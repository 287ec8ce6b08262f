"""Base image build figures: cold vs warm build time, size against upstream, common libraries' share.

Prints figures side by side from one run; asserts nothing. Run with `make bench`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from immutable.config import BaseImageRunParams, BaseImageSpec, load_base_spec
from immutable.images import base
from immutable.images.engine import docker_client
from immutable.images.upstream import upstream_digest

MB = 1_000_000


def timed_build(spec: BaseImageSpec, version: str, created: datetime, *, nocache: bool) -> tuple[str, float]:
    labels = base.build_labels(
        spec=spec,
        version=version,
        created=created,
        upstream_digest=upstream_digest(spec.upstream.image),
        params=BaseImageRunParams(reason="manual"),
        run_id="bench",
    )
    started = time.monotonic()
    image_id = base.build(spec=spec, upstream_ref=spec.upstream.image, version=version, labels=labels, nocache=nocache)
    return image_id, time.monotonic() - started


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    client = docker_client()
    spec = load_base_spec().model_copy(update={"repository": "immutable/base-bench"})
    created = datetime.now(UTC)
    stamp = created.strftime("%Y.%m.%d.%H%M%S")

    cold_id, cold_s = timed_build(spec, f"{stamp}.1", created, nocache=True)
    warm_id, warm_s = timed_build(spec, f"{stamp}.1", created, nocache=False)
    bare_spec = spec.model_copy(update={"common_packages": []})
    bare_id, _ = timed_build(bare_spec, f"{stamp}.2", created, nocache=False)

    size = {
        name: client.images.get(ref).attrs["Size"]
        for name, ref in {"upstream": spec.upstream.image, "base": cold_id, "bare": bare_id}.items()
    }
    libraries = size["base"] - size["bare"]
    print("\nbase image build")
    print(f"  {'cold build (no cache)':<34} {cold_s:8.1f} s")
    print(f"  {'warm build (same version, cached)':<34} {warm_s:8.1f} s   ({cold_s / max(warm_s, 0.01):.0f}x faster)")
    print(f"  {'upstream image size':<34} {size['upstream'] / MB:8.1f} MB")
    print(f"  {'base image size':<34} {size['base'] / MB:8.1f} MB   ({size['base'] / size['upstream']:.2f}x upstream)")
    print(f"  {'without common libraries':<34} {size['bare'] / MB:8.1f} MB")
    print(
        f"  {'common libraries share':<34} {libraries / MB:8.1f} MB   ({100 * libraries / size['base']:.0f}% of base)"
    )
    print(f"  (warm build reused image: {warm_id == cold_id})")
    for ref in {cold_id, warm_id, bare_id}:
        client.images.remove(ref, force=True)


if __name__ == "__main__":
    main()
