"""Helpers the benchmark scripts share."""

from __future__ import annotations

import os
from typing import Any

# `IMMUTABLE_BENCH_QUICK=1`: fewer repetitions, so the tests can run every benchmark in minutes.
# The figures are the same kind, from fewer samples; each script says so in its output.
QUICK = os.environ.get("IMMUTABLE_BENCH_QUICK") == "1"


def repetitions(full: int, quick: int) -> int:
    return quick if QUICK else full


def say_if_quick() -> None:
    if QUICK:
        print("  (IMMUTABLE_BENCH_QUICK=1: fewer repetitions than a real measurement; do not compare)")


def remove_images(client: Any, built: list[str]) -> None:
    """Apps first, then the bake's leftover install stages (descendants of our base), then the base.

    Force does not remove an image with children, so the order matters. Only images we built go.
    """
    import docker

    if not built:
        return
    *finals, base_id = built

    def descends_from_base(image: Any) -> bool:
        parent = image.attrs.get("Parent") or ""
        while parent:
            if parent == base_id:
                return True
            try:
                parent = client.images.get(parent).attrs.get("Parent") or ""
            except docker.errors.ImageNotFound:
                return False
        return False

    for ref in finals:
        client.images.remove(ref, force=True)
    for image in client.images.list(filters={"dangling": True}):
        if descends_from_base(image):
            client.images.remove(image.id, force=True)
    client.images.remove(base_id, force=True)
