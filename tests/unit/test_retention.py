"""Which stored images a registry keeps (immutable.retention): the newest N, and whatever is in use."""

from __future__ import annotations

import pytest

from immutable.retention import StoredImage, plan_retention


def image(n: int) -> StoredImage:
    return StoredImage(digest=f"sha256:{n:064x}", created=f"2026-11-{n:02d}T10:00:00Z", tags=(f"1.{n}.0",))


def test_the_newest_are_kept_and_what_is_in_use_whatever_its_age() -> None:
    images = [image(n) for n in (3, 1, 5, 2, 4)]  # any order: by build time
    plan = plan_retention(images, keep=2, protected={image(1).digest: "live of sample in eu-west"})
    assert plan.kept == {
        image(5).digest: "one of the newest 2",
        image(4).digest: "one of the newest 2",
        image(1).digest: "live of sample in eu-west",
    }
    assert [i.tags for i in plan.removed] == [("1.3.0",), ("1.2.0",)]


def test_nothing_goes_while_there_are_no_more_than_keep() -> None:
    plan = plan_retention([image(1), image(2)], keep=2, protected={})
    assert plan.removed == [] and len(plan.kept) == 2
    with pytest.raises(ValueError, match="at least 1"):
        plan_retention([image(1)], keep=0, protected={})
