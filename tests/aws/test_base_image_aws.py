"""base_image on the aws platform: the same DAG, with dag.test() against the moto server."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.aws.conftest import AwsAccount
from tests.aws.deferrals import through_every_wait
from tests.integration import helpers
from tests.integration.helpers import xcom

OCI = "org.opencontainers.image"
CANDIDATE = "immutable:channel:candidate"
OUR_ROLES = ("builder", "base-test", "upgrade-probe", "bake", "dev", "staging")  # the images half's instances

pytestmark = pytest.mark.usefixtures("airflow_db")


def run_base(conf: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    return helpers.run_dag("base_image.py", "base_image", conf)


def tags_of(image: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


def live_instances(account: AwsAccount) -> list[str]:
    ec2 = account.client("ec2")
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:immutable:role", "Values": list(OUR_ROLES)},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


@pytest.fixture(scope="module")
def first_build(aws_account: AwsAccount) -> dict[str, Any]:
    # No CVE ids: verifying them needs the builder's package list, which the emulator's SSM does not
    # return (its commands print nothing); the local platform's tests verify them.
    run, states = run_base({"reason": "security", "force": True})
    assert str(run.state) == "success", states
    assert set(states.values()) == {"success"}, states
    return {"run": run, "published": xcom(run, "publish"), "built": xcom(run, "build")}


def test_publish_makes_a_tagged_ami_and_moves_candidate(aws_account: AwsAccount, first_build: dict[str, Any]) -> None:
    from immutable.aws.sboms import sbom_key
    from immutable.config import load_base_spec
    from immutable.sbom import validate

    published = first_build["published"]
    image_id, repository = published["digest"], load_base_spec().repository
    assert image_id.startswith("ami-")
    assert published["upstream_digest"] == aws_account.upstream_image_id
    image = aws_account.client("ec2").describe_images(ImageIds=[image_id])["Images"][0]
    assert image["State"] == "available"
    tags = tags_of(image)
    assert tags[f"{OCI}.version"] == published["version"]
    assert tags[f"{OCI}.base.digest"] == aws_account.upstream_image_id
    assert tags[f"{OCI}.base.name"] == aws_account.upstream_parameter
    assert tags.get("io.immutable.base.cves", "") == ""
    assert tags["io.immutable.base.reason"] == "security"
    assert tags[f"{OCI}.revision"]
    assert tags["immutable:repository"] == repository
    assert tags[CANDIDATE] == "true"
    # Its SBOM, named by the tag set as the AMI was made, and in the candidate's event.
    document = aws_account.client("s3").get_object(
        Bucket=aws_account.bucket, Key=sbom_key(repository, tags["immutable:sbom"])
    )
    body = document["Body"].read()
    validate(body.decode())
    assert tags["immutable:sbom"] == published["sbom"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert json.loads(body)["metadata"]["component"]["version"] == published["version"]


def test_the_builder_and_test_instances_are_terminated(aws_account: AwsAccount, first_build: dict[str, Any]) -> None:
    # The AMI was waited for in the triggerer, the builder kept meanwhile and terminated after.
    built = first_build["built"]
    assert built["pending"] is False and built["waited_in_triggerer_s"] >= 0, built
    assert live_instances(aws_account) == []
    ec2 = aws_account.client("ec2")
    reservations = ec2.describe_instances(Filters=[{"Name": "tag:immutable:role", "Values": ["builder"]}])[
        "Reservations"
    ]
    builders = [i for r in reservations for i in r["Instances"]]
    assert builders, "no builder instance was launched"
    assert {i["State"]["Name"] for i in builders} == {"terminated"}
    assert {i["ImageId"] for i in builders} == {aws_account.upstream_image_id}


def test_the_base_checks_wait_in_the_triggerer_and_their_instance_goes(
    aws_account: AwsAccount, first_build: dict[str, Any]
) -> None:
    """The `test` task launches a test instance of the new AMI and waits in the triggerer for its SSM
    agent and then for the checks (each trigger rebuilt as a new triggerer process would); the
    resumed task terminates the instance and judges the checks."""
    from airflow.sdk.exceptions import TaskDeferred

    from immutable.aws.triggers import WaiterTrigger
    from immutable.operators.checks import BaseChecksOperator

    def on_wait(trigger: Any, restarted: Any) -> None:
        assert isinstance(trigger, WaiterTrigger) and trigger.service == "ssm", trigger
        state = aws_account.client("ec2").describe_instances(InstanceIds=[instance_of(trigger)])
        assert state["Reservations"][0]["Instances"][0]["State"]["Name"] in ("pending", "running")

    def instance_of(trigger: Any) -> str:
        return str(trigger.return_value["work"]["ssm"]["instance_id"])

    built = first_build["built"] | {"run_id": "test-deferred-checks"}
    operator = BaseChecksOperator(task_id="test", built=built)
    with pytest.raises(TaskDeferred) as first:
        operator.execute({"run_id": built["run_id"]})
    checks, waited = through_every_wait(operator, first.value, on_wait)
    assert [t.waiter_name for t in waited] == ["AgentOnline", "CommandEnded"], waited
    instance_id = instance_of(waited[-1])
    assert [c["name"] for c in checks] == ["instance-checks"], checks  # the emulator's commands print nothing
    state = aws_account.client("ec2").describe_instances(InstanceIds=[instance_id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    assert live_instances(aws_account) == []


def test_the_base_scripts_ran_over_ssm(aws_account: AwsAccount, first_build: dict[str, Any]) -> None:
    ssm = aws_account.client("ssm")
    # This run's builder only: another base in the same account (aws-smoke's, tests/aws/test_aws_smoke.py)
    # may have been built as the same version the same day.
    filters = [
        {"Name": "tag:immutable:role", "Values": ["builder"]},
        {"Name": "tag:immutable:run", "Values": [first_build["run"].run_id]},
    ]
    reservations = aws_account.client("ec2").describe_instances(Filters=filters)["Reservations"]
    builder = {i["InstanceId"] for r in reservations for i in r["Instances"]}
    assert builder, "no builder of this run"
    commands = ssm.list_commands()["Commands"]
    builds = [
        c
        for c in commands
        if c["Comment"] == f"base {first_build['published']['version']}" and set(c["InstanceIds"]) & builder
    ]
    assert len(builds) == 1
    script = "\n".join(builds[0]["Parameters"]["commands"])
    assert builds[0]["DocumentName"] == "AWS-RunShellScript"
    assert "scripts/build.sh" in script
    assert "REMOVE_PACKAGES=" in script


def test_nothing_new_skips_and_a_new_upstream_rebuilds(aws_account: AwsAccount, first_build: dict[str, Any]) -> None:
    run, states = run_base({"reason": "weekly"})
    assert str(run.state) == "success", states
    assert states["probe_upgrades"] == states["check_updates"] == "success"
    assert {states[t] for t in ("build", "test", "record_manifest", "verify_cves", "publish")} == {"skipped"}, states
    # The upstream was the candidate's own: a probe instance of the candidate listed its pending
    # upgrades (its agent and the listing waited for in the triggerer), and it is gone.
    assert xcom(run, "probe_upgrades") == {"upgradable": [], "probed": True}
    probes = aws_account.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:immutable:role", "Values": ["upgrade-probe"]},
            {"Name": "image-id", "Values": [first_build["published"]["digest"]]},
        ]
    )["Reservations"]
    found = [i for r in probes for i in r["Instances"]]
    assert found and {i["State"]["Name"] for i in found} == {"terminated"}, found

    # The distribution publishes a new AMI: its SSM parameter moves and the next run rebuilds.
    ec2, ssm = aws_account.client("ec2"), aws_account.client("ssm")
    instance = ec2.run_instances(
        ImageId=aws_account.upstream_image_id, MinCount=1, MaxCount=1, SubnetId=aws_account.builder_subnet
    )["Instances"][0]["InstanceId"]
    newer = ec2.create_image(InstanceId=instance, Name="debian-12-amd64-20260201-0000")["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance])
    ssm.put_parameter(Name=aws_account.upstream_parameter, Value=newer, Type="String", Overwrite=True)
    try:
        run, states = run_base({"reason": "weekly"})
        assert str(run.state) == "success", states
        assert set(states.values()) == {"success"}, states
        published = xcom(run, "publish")
        assert published["upstream_digest"] == newer
        assert published["version"] != first_build["published"]["version"]
        candidates = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{CANDIDATE}", "Values": ["true"]}])[
            "Images"
        ]
        assert [i["ImageId"] for i in candidates] == [published["digest"]]  # unique per repository
    finally:
        ssm.put_parameter(
            Name=aws_account.upstream_parameter, Value=aws_account.upstream_image_id, Type="String", Overwrite=True
        )
