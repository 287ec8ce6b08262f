"""Which stored images a registry keeps: pure, called by the platform packages' retention.

An image is kept when it is one of the repository's newest `keep` (by when it was built), or when
something needs it (it runs, it is kept for rollback, a channel names it, a release is taking it
out now): `protected` says what, per digest. Everything else goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StoredImage:
    digest: str
    created: str  # ISO 8601 from the image's config: sorts as time does
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetentionPlan:
    kept: dict[str, str] = field(default_factory=dict)  # digest -> why
    removed: list[StoredImage] = field(default_factory=list)


def plan_retention(images: Sequence[StoredImage], *, keep: int, protected: Mapping[str, str]) -> RetentionPlan:
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    newest_first = sorted(images, key=lambda image: (image.created, image.digest), reverse=True)
    kept: dict[str, str] = {}
    removed: list[StoredImage] = []
    for rank, image in enumerate(newest_first):
        if rank < keep:
            kept[image.digest] = f"one of the newest {keep}"
        elif image.digest in protected:
            kept[image.digest] = protected[image.digest]
        else:
            removed.append(image)
    return RetentionPlan(kept=kept, removed=removed)
