"""`make aws-smoke` against the emulator: it stops before making anything when the credentials are
for another account; otherwise it builds its base, releases twice (canary and flip), rolls back,
and lists, prices and removes everything it made. What only a real account shows is in the README's
aws section."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from immutable.aws_smoke import (
    FIRST_VERSION,
    SECOND_VERSION,
    SMOKE_APP,
    SMOKE_BASE_REPOSITORY,
    SMOKE_REPOSITORY,
    main,
)
from tests.aws.conftest import REGIONS, AwsAccount
from tests.aws.test_aws_production import AlbMetrics

EMULATED_ACCOUNT = "123456789012"  # the emulator's
SMOKE_REGIONS = REGIONS[:2]
SMOKE_PORT = 8080  # the smoke's own listener on each region's load balancer
NOTHING_LIVE = {
    "Type": "fixed-response",
    "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain", "MessageBody": "no smoke"},
}


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


@pytest.fixture
def smoke_platform_file(aws_account: AwsAccount, tmp_path: Path) -> Iterator[Path]:
    """The test account's platform file, each smoke region with a listener of the smoke's own on its
    load balancer (as the README asks of a real account: the smoke's flips never touch the sample's)."""
    document = yaml.safe_load(aws_account.platform_file.read_text())
    listeners = {}
    for region in SMOKE_REGIONS:
        listeners[region] = aws_account.client("elbv2", region).create_listener(
            LoadBalancerArn=aws_account.regions[region].load_balancer_arn,
            Protocol="HTTP",
            Port=SMOKE_PORT,
            DefaultActions=[NOTHING_LIVE],
        )["Listeners"][0]["ListenerArn"]
    for entry in document["regions"]:
        if entry["name"] in listeners:
            entry["aws"]["listener_arn"] = listeners[entry["name"]]
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        yield path
    finally:
        for region, arn in listeners.items():
            aws_account.client("elbv2", region).delete_listener(ListenerArn=arn)


def smoke_leftovers(account: AwsAccount) -> dict[str, list[str]]:
    """What of the smoke's is still in the account: AMIs, groups, target groups, artifacts, and
    listeners of its own that still forward somewhere."""
    found: dict[str, list[str]] = {"AMIs": [], "groups": [], "target groups": [], "artifacts": [], "forwards": []}
    for region in SMOKE_REGIONS:
        images = account.client("ec2", region).describe_images(
            Owners=["self"],
            Filters=[{"Name": "tag:immutable:repository", "Values": [SMOKE_BASE_REPOSITORY, SMOKE_REPOSITORY]}],
        )["Images"]
        found["AMIs"] += [f"{i['ImageId']} ({region})" for i in images]
        groups = account.client("autoscaling", region).describe_auto_scaling_groups()["AutoScalingGroups"]
        found["groups"] += [
            g["AutoScalingGroupName"]
            for g in groups
            if {"Key": "immutable:app", "Value": SMOKE_APP}
            in [{"Key": t["Key"], "Value": t["Value"]} for t in g["Tags"]]
        ]
        elb = account.client("elbv2", region)
        found["target groups"] += [
            f"{t['TargetGroupName']} ({region})"
            for t in elb.describe_target_groups()["TargetGroups"]
            if t["TargetGroupName"].startswith(f"{SMOKE_APP}-")
        ]
        listeners = elb.describe_listeners(LoadBalancerArn=account.regions[region].load_balancer_arn)["Listeners"]
        found["forwards"] += [
            f"{region}:{listener['Port']}"
            for listener in listeners
            if listener["Port"] == SMOKE_PORT and any(a["Type"] == "forward" for a in listener["DefaultActions"])
        ]
    s3 = account.client("s3")
    for prefix in (f"apps/{SMOKE_APP}/", f"sboms/{SMOKE_REPOSITORY}/", f"sboms/{SMOKE_BASE_REPOSITORY}/"):
        found["artifacts"] += [
            o["Key"] for o in s3.list_objects_v2(Bucket=account.bucket, Prefix=prefix).get("Contents", [])
        ]
    found["artifacts"] += [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=account.bucket, Prefix="production/").get("Contents", [])
        if o["Key"].split("/")[-1].startswith(f"{SMOKE_APP}.json")
    ]
    return found


def test_the_whole_smoke_releases_rolls_back_and_leaves_nothing_behind(
    aws_account: AwsAccount, smoke_platform_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make aws-smoke` end to end on the emulator (with the tests' ALB metrics for the smoke's app):
    the base, 1.0.0 then 1.1.0 through the canary and the flip in both regions, the rollback to
    1.0.0, then the report and a cleanup after which nothing of the smoke's is left."""
    argv = ["--account", EMULATED_ACCOUNT, "--regions", ",".join(SMOKE_REGIONS), "--platform", str(smoke_platform_file)]
    with AlbMetrics(aws_account, {}, app=SMOKE_APP):
        code = main(argv)
    out, err = capsys.readouterr()
    if code != 0:
        kept = Path(err.split("the phases' logs are in ", 1)[1].strip())
        logs = {log.name: log.read_text()[-3000:] for log in sorted(kept.glob("*.log"))}
        shutil.rmtree(kept)
        pytest.fail(f"aws-smoke ended {code}:\n{out}\n{err}\n{logs}")
    report = out.split("=== aws-smoke ===", 1)[1]
    for phase in ("identity", "base", "release", "rollback"):
        assert re.search(rf"^  {phase} +ok ", report, re.MULTILINE), report
    assert f"{FIRST_VERSION}, then {SECOND_VERSION} through canary and flip" in report
    assert f"every region back on {FIRST_VERSION}" in report
    for kind in ("AMIs", "instances"):  # made in both regions: the AMI copied, the fleets launched
        listed = re.search(rf"^  {kind} +(.*)$", report, re.MULTILINE)
        assert listed is not None and all(f"({region}" in listed.group(1) for region in SMOKE_REGIONS), report
    assert re.search(r"^cost estimate: about \$[0-9]+\.[0-9]{2} of instance time", report, re.MULTILINE), report
    assert re.search(r"^cleanup: removed [1-9][0-9]* resources and [1-9][0-9]* artifacts", report, re.MULTILINE), report
    leftovers = smoke_leftovers(aws_account)
    assert not any(leftovers.values()), leftovers


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
