"""`make aws-smoke`'s refusals, its platform file and its report, without an account (the emulator
runs it in tests/aws/test_aws_smoke.py; a real account only by hand)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from immutable.aws_smoke import (
    REAL_TIMING,
    Phase,
    SmokeRefused,
    check_request,
    estimate_cost,
    main,
    report,
    smoke_document,
)
from immutable.config import PlatformConfig, parse_model

EXAMPLE = Path(__file__).resolve().parents[2] / "include" / "aws" / "platform.yaml"
ACCOUNT = "123456789012"


def example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return document


@pytest.mark.parametrize(
    ("account", "regions", "says"),
    [
        ("", ["eu-west-1", "us-east-1"], "ACCOUNT: '' is not an AWS account id"),
        ("12345", ["eu-west-1", "us-east-1"], "ACCOUNT: '12345' is not an AWS account id"),
        (ACCOUNT, [], "REGIONS: '' must be two or more different regions"),
        (ACCOUNT, ["eu-west-1"], "REGIONS: 'eu-west-1' must be two or more"),
        (ACCOUNT, ["eu-west-1", "eu-west-1"], "must be two or more different regions"),
        (ACCOUNT, ["eu-west-1", "mars-north-1"], "REGIONS: ['mars-north-1'] not in the platform file; allowed: "),
        (ACCOUNT, ["us-east-1", "ap-south-1"], "must include the platform's build_region 'eu-west-1'"),
    ],
)
def test_a_request_that_does_not_name_exactly_what_to_touch_is_refused(
    account: str, regions: list[str], says: str
) -> None:
    with pytest.raises(SmokeRefused) as refused:
        check_request(account, regions, example())
    assert says in str(refused.value)


def test_a_platform_file_that_is_not_for_aws_is_refused() -> None:
    local = yaml.safe_load((EXAMPLE.parents[1] / "platform.yaml").read_text())
    with pytest.raises(SmokeRefused, match=r"not 'aws'.*give an aws platform file"):
        check_request(ACCOUNT, ["eu-west", "us-east"], local)


def test_the_smokes_platform_has_only_its_regions_pilot_first_and_validates() -> None:
    regions = check_request(ACCOUNT, ["us-east-1", "eu-west-1"], example())
    assert regions == ["eu-west-1", "us-east-1"]  # the build region is the pilot
    document = smoke_document(example(), regions)
    assert [r["name"] for r in document["regions"]] == regions
    assert document["rollout"] == {"waves": [["eu-west-1"], ["us-east-1"]]}
    assert document["timing_overrides"] == REAL_TIMING  # the example has none: real ALB timing
    config = parse_model(PlatformConfig, document, "smoke")
    assert [r.name for r in config.regions] == regions
    assert example()["regions"][2]["name"] == "ap-south-1"  # the user's document is left as it was


def test_the_cost_counts_each_instance_from_its_launch_at_its_price() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    instances: list[dict[str, Any]] = [
        {"InstanceType": "t3.micro", "LaunchTime": now - timedelta(hours=2)},
        {"InstanceType": "m7i.large", "LaunchTime": (now - timedelta(hours=1)).isoformat()},
        {"InstanceType": "t3.micro", "LaunchTime": now},  # billed one minute at least
    ]
    cost, notes = estimate_cost(instances, now)
    assert cost == pytest.approx(2 * 0.0104 + 0.0416 + 0.0104 / 60)
    assert "m7i.large: priced as t3.medium" in notes


def test_the_report_shows_the_failed_phase_what_was_made_and_a_failed_cleanup() -> None:
    phases = [Phase("identity", 2, True, "credentials are for account 1"), Phase("base", 600, False, "boom")]
    inventory = Phase("inventory", 3, True, "", {"resources": {"AMIs": ["ami-1 (eu-west-1)"]}, "instances": []})
    text = report(phases, inventory, Phase("cleanup", 5, False, "AccessDenied"), datetime.now(UTC))
    assert "base       FAILED" in text and "boom" in text
    assert "AMIs             ami-1 (eu-west-1)" in text
    assert "CLEANUP FAILED, remove the resources above by hand: AccessDenied" in text


def test_make_aws_smoke_without_an_account_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--regions", "eu-west-1,us-east-1", "--platform", str(EXAMPLE)]) == 2
    assert "aws-smoke refused, nothing was started: ACCOUNT: '' is not an AWS account id" in capsys.readouterr().err
