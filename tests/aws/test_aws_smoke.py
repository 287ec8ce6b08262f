"""`make aws-smoke` against the emulator: it stops before making anything when the credentials are
for another account, and what its phases make is listed, priced and removed. (The whole smoke,
releases and rollback included, is for a real account: see the README's aws section.)"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from immutable.aws_smoke import (
    SMOKE_BASE_REPOSITORY,
    check_request,
    child,
    estimate_cost,
    main,
    prepare,
    smoke_document,
)
from tests.aws.conftest import REGIONS, AwsAccount

EMULATED_ACCOUNT = "123456789012"  # the emulator's


def smoke_images(account: AwsAccount) -> list[str]:
    images = account.client("ec2").describe_images(
        Owners=["self"], Filters=[{"Name": "tag:immutable:repository", "Values": [SMOKE_BASE_REPOSITORY]}]
    )["Images"]
    return [str(i["ImageId"]) for i in images]


def test_credentials_for_another_account_stop_the_smoke_before_it_makes_anything(
    aws_account: AwsAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--account",
        "000000000000",
        "--regions",
        ",".join(REGIONS[:2]),
        "--platform",
        str(aws_account.platform_file),
    ]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    kept = Path(err.split("the phases' logs are in ", 1)[1].strip())  # a failed run keeps its logs: not here
    assert (kept / "identity.log").exists()
    shutil.rmtree(kept)
    assert f"credentials are for account {EMULATED_ACCOUNT}, not 000000000000" in out
    assert "aws-smoke stopped before making anything" in out
    assert "--- base" not in out and "--- cleanup" not in out  # nothing is made, nothing touched there
    assert smoke_images(aws_account) == []


def test_what_the_smokes_base_phase_makes_is_listed_priced_and_removed(aws_account: AwsAccount, tmp_path: Path) -> None:
    document = yaml.safe_load(aws_account.platform_file.read_text())
    regions = check_request(EMULATED_ACCOUNT, list(REGIONS[:2]), document)
    prepare(tmp_path, smoke_document(document, regions))
    base = child("base", tmp_path, EMULATED_ACCOUNT)
    assert base.ok, base.detail
    made = smoke_images(aws_account)
    assert len(made) == 1, made

    listed = child("inventory", tmp_path, EMULATED_ACCOUNT)
    assert listed.ok, listed.detail
    resources = listed.result["resources"]
    assert resources["AMIs"] == [f"{made[0]} ({regions[0]})"]
    assert any("terminated" in i for i in resources["instances"]), resources  # the builder, gone already
    assert any(SMOKE_BASE_REPOSITORY in key for key in resources["artifacts"]), resources  # its SBOM
    cost, _ = estimate_cost(listed.result["instances"], datetime.now(UTC))
    assert cost > 0

    cleaned = child("cleanup", tmp_path, EMULATED_ACCOUNT)
    assert cleaned.ok, cleaned.detail
    assert made[0] in cleaned.result["removed"]
    assert smoke_images(aws_account) == []
    after = child("inventory", tmp_path, EMULATED_ACCOUNT).result["resources"]
    assert after["AMIs"] == [] and after["artifacts"] == [] and after["groups"] == []


def test_make_aws_smoke_as_the_readme_gives_it_refuses_without_an_account() -> None:
    import subprocess

    from tests.conftest import ROOT

    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "aws-smoke",
            f"REGIONS={','.join(REGIONS[:2])}",
            "PLATFORM=include/aws/platform.yaml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    assert "aws-smoke refused, nothing was started: ACCOUNT: '' is not an AWS account id" in done.stderr
