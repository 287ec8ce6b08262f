"""Helpers the benchmark scripts share."""

from __future__ import annotations

from typing import Any


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
