from __future__ import annotations

from datetime import date

import pytest

from immutable.versioning import latest_version, next_version, parse_version


def test_first_version_of_the_day_is_one() -> None:
    assert next_version([], date(2026, 11, 26)) == "2026.11.26.1"


def test_same_day_counts_up_and_ignores_channel_tags() -> None:
    tags = ["candidate", "stable", "2026.11.26.1", "2026.11.26.2", "2026.11.19.4"]
    assert next_version(tags, date(2026, 11, 26)) == "2026.11.26.3"


def test_new_day_restarts_the_serial() -> None:
    assert next_version(["2026.11.19.4"], date(2026, 11, 26)) == "2026.11.26.1"


def test_never_goes_backwards_when_a_later_version_exists() -> None:
    assert next_version(["2026.12.01.2"], date(2026, 11, 26)) == "2026.12.01.3"


def test_serial_is_compared_as_a_number() -> None:
    tags = [f"2026.11.26.{n}" for n in range(1, 12)]
    assert next_version(tags, date(2026, 11, 26)) == "2026.11.26.12"
    assert latest_version(tags) == "2026.11.26.11"


@pytest.mark.parametrize("tag", ["candidate", "2026.11.26", "v2026.11.26.1", "2026-11-26-1"])
def test_non_versions_are_not_parsed(tag: str) -> None:
    assert parse_version(tag) is None
