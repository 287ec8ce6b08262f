"""The realism layer in front of moto answers as AWS does (tests/aws/realism.py): if it stopped, the
tests of the aws platform would pass against a forgiving emulator again, so each behaviour is checked."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.aws.conftest import BUILD_REGION, REGIONS, AwsAccount


def _error_code(call: Any, **kwargs: Any) -> str:
    with pytest.raises(Exception) as raised:
        call(**kwargs)
    return str(raised.value.response["Error"]["Code"])  # type: ignore[attr-defined]


def _image(account: AwsAccount, name: str, ask_at_once: Any = None) -> str:
    """A new AMI; `ask_at_once(image_id)` runs right after CreateImage (the layer's windows are seconds)."""
    ec2 = account.client("ec2")
    instance = ec2.run_instances(
        ImageId=account.upstream_image_id, MinCount=1, MaxCount=1, SubnetId=account.builder_subnet
    )["Instances"][0]["InstanceId"]
    image_id = str(ec2.create_image(InstanceId=instance, Name=name)["ImageId"])
    if ask_at_once is not None:
        ask_at_once(image_id)
    ec2.terminate_instances(InstanceIds=[instance])
    return image_id


def _wait_visible(ec2: Any, image_id: str) -> dict[str, Any]:
    ec2.get_waiter("image_exists").wait(ImageIds=[image_id], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return dict(ec2.describe_images(ImageIds=[image_id])["Images"][0])


def test_a_new_ami_is_not_found_then_pending_then_available(aws_account: AwsAccount) -> None:
    ec2 = aws_account.client("ec2")
    codes: list[str] = []
    image_id = _image(
        aws_account,
        f"realism-{uuid.uuid4().hex[:8]}",
        lambda new: codes.append(_error_code(ec2.describe_images, ImageIds=[new])),
    )
    assert codes == ["InvalidAMIID.NotFound"]
    assert _wait_visible(ec2, image_id)["State"] == "pending"
    ec2.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def test_a_snapshot_is_in_use_right_after_deregistration(aws_account: AwsAccount) -> None:
    ec2 = aws_account.client("ec2")
    image_id = _image(aws_account, f"realism-{uuid.uuid4().hex[:8]}")
    image = _wait_visible(ec2, image_id)
    snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshots
    ec2.deregister_image(ImageId=image_id)
    assert _error_code(ec2.delete_snapshot, SnapshotId=snapshots[0]) == "InvalidSnapshot.InUse"


def test_deregistering_with_its_snapshots_deletes_them(aws_account: AwsAccount) -> None:
    ec2 = aws_account.client("ec2")
    image_id = _image(aws_account, f"realism-{uuid.uuid4().hex[:8]}")
    snapshots = [m["Ebs"]["SnapshotId"] for m in _wait_visible(ec2, image_id)["BlockDeviceMappings"] if "Ebs" in m]
    ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(snapshots) & left


def test_a_copy_client_token_returns_the_first_copy_even_deregistered(aws_account: AwsAccount) -> None:
    source = _image(aws_account, f"realism-{uuid.uuid4().hex[:8]}")
    target = aws_account.client("ec2", REGIONS[1])
    token = uuid.uuid4().hex
    copy = {"SourceImageId": source, "SourceRegion": BUILD_REGION, "Name": "copy", "ClientToken": token}
    first = target.copy_image(
        **copy, TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "made-by", "Value": "test"}]}]
    )["ImageId"]
    assert {"Key": "made-by", "Value": "test"} in _wait_visible(target, first)["Tags"]  # tagged as it is created
    target.deregister_image(ImageId=first)
    again = target.copy_image(
        **copy, TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "made-by", "Value": "test"}]}]
    )
    assert again["ImageId"] == first
    assert _error_code(target.copy_image, **(copy | {"Name": "other"})) == "IdempotentParameterMismatch"


def test_a_target_group_no_listener_forwards_to_is_unused(aws_account: AwsAccount) -> None:
    region = aws_account.regions[BUILD_REGION]
    elb, ec2 = aws_account.client("elbv2"), aws_account.client("ec2")
    name = f"realism-{uuid.uuid4().hex[:6]}"
    group = elb.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=region.vpc_id, TargetType="instance")
    arn = group["TargetGroups"][0]["TargetGroupArn"]
    instance = ec2.run_instances(
        ImageId=aws_account.upstream_image_id, MinCount=1, MaxCount=1, SubnetId=region.subnet_ids[0]
    )["Instances"][0]["InstanceId"]
    try:
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance}])
        health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"][0]["TargetHealth"]
        assert health["State"] == "unused" and health["Reason"] == "Target.NotInUse"
        rule = elb.create_rule(
            ListenerArn=region.listener_arn,
            Priority=999,
            Conditions=[{"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Test", "Values": [name]}}],
            Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": arn, "Weight": 0}]}}],
        )["Rules"][0]["RuleArn"]
        time.sleep(0.1)
        health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"][0]["TargetHealth"]
        assert health["State"] != "unused", health
        elb.delete_rule(RuleArn=rule)
    finally:
        ec2.terminate_instances(InstanceIds=[instance])
        elb.delete_target_group(TargetGroupArn=arn)


def test_ssm_reaches_an_instance_only_once_its_agent_registered(aws_account: AwsAccount) -> None:
    from tests.aws.conftest import BUILDER_PROFILE

    ec2, ssm = aws_account.client("ec2"), aws_account.client("ssm")
    launch = {"MinCount": 1, "MaxCount": 1, "SubnetId": aws_account.builder_subnet}
    bare = ec2.run_instances(ImageId=aws_account.upstream_image_id, **launch)["Instances"][0]["InstanceId"]
    agent = ec2.run_instances(
        ImageId=aws_account.upstream_image_id,
        UserData="#!/bin/sh\napt-get install -y amazon-ssm-agent\n",
        IamInstanceProfile={"Name": BUILDER_PROFILE},
        **launch,
    )["Instances"][0]["InstanceId"]
    command = {"DocumentName": "AWS-RunShellScript", "Parameters": {"commands": ["true"]}}

    def listed(instance_id: str) -> list[Any]:
        filters = [{"Key": "InstanceIds", "Values": [instance_id]}]
        return list(ssm.describe_instance_information(Filters=filters)["InstanceInformationList"])

    try:
        assert _error_code(ssm.send_command, InstanceIds=[agent], **command) == "InvalidInstanceId"
        assert listed(agent) == []
        time.sleep(3.5)
        assert [i["PingStatus"] for i in listed(agent)] == ["Online"]
        assert ssm.send_command(InstanceIds=[agent], **command)["Command"]["CommandId"]
        # Debian's AMI has no agent: without user data that installs one, never.
        assert listed(bare) == []
        assert _error_code(ssm.send_command, InstanceIds=[bare], **command) == "InvalidInstanceId"
    finally:
        ec2.terminate_instances(InstanceIds=[bare, agent])


def test_a_group_whose_instances_cannot_launch_exists_and_says_why(aws_account: AwsAccount) -> None:
    region = aws_account.regions[BUILD_REGION]
    ec2, scaling = aws_account.client("ec2"), aws_account.client("autoscaling")
    name = f"realism-{uuid.uuid4().hex[:6]}"
    template = ec2.create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={"ImageId": aws_account.upstream_image_id, "SecurityGroupIds": ["sg-0123456789abcdef0"]},
    )["LaunchTemplate"]["LaunchTemplateId"]
    try:
        scaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            MinSize=1,
            MaxSize=1,
            DesiredCapacity=1,
            VPCZoneIdentifier=region.subnet_ids[0],
        )
        [group] = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        assert group["Instances"] == []
        activities = scaling.describe_scaling_activities(AutoScalingGroupName=name)["Activities"]
        assert activities[0]["StatusCode"] == "Failed"
        assert "sg-0123456789abcdef0" in activities[0]["StatusMessage"], activities[0]
    finally:
        scaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
        ec2.delete_launch_template(LaunchTemplateId=template)


def test_a_percentile_is_the_nearest_rank_of_the_periods_distribution(aws_account: AwsAccount) -> None:
    """moto fails on any percentile statistic; the layer answers it from the points put, as
    CloudWatch does: per period, the value at the percentile's rank among the values' counts."""
    from datetime import UTC, datetime, timedelta

    cloudwatch = aws_account.client("cloudwatch")
    metric = {
        "Namespace": "Realism/Test",
        "MetricName": f"Latency{uuid.uuid4().hex[:6]}",
        "Dimensions": [{"Name": "Group", "Value": "a"}],
    }
    period_start = datetime.fromtimestamp(int(time.time()) // 60 * 60 - 120, UTC)
    second_period = period_start + timedelta(seconds=60)
    cloudwatch.put_metric_data(
        Namespace=metric["Namespace"],
        MetricData=[
            {
                "MetricName": metric["MetricName"],
                "Dimensions": metric["Dimensions"],
                "Timestamp": period_start + timedelta(seconds=5),
                "Values": [0.01, 0.02, 0.5],
                "Counts": [50.0, 40.0, 10.0],
            },
            {
                "MetricName": metric["MetricName"],
                "Dimensions": metric["Dimensions"],
                "Timestamp": period_start + timedelta(seconds=30),
                "Values": [0.03],
                "Counts": [100.0],
            },
            {
                "MetricName": metric["MetricName"],
                "Dimensions": metric["Dimensions"],
                "Timestamp": second_period,
                "Values": [0.2],
                "Counts": [1.0],
            },
        ],
    )

    def series(stat: str) -> dict[datetime, float]:
        answer = cloudwatch.get_metric_data(
            MetricDataQueries=[{"Id": "m", "MetricStat": {"Metric": metric, "Period": 60, "Stat": stat}}],
            StartTime=period_start,
            EndTime=second_period + timedelta(seconds=60),
            ScanBy="TimestampAscending",
        )["MetricDataResults"][0]
        return {t.astimezone(UTC): v for t, v in zip(answer["Timestamps"], answer["Values"], strict=True)}

    # The first period: 50 x 10 ms, 40 x 20 ms, 10 x 500 ms and 100 x 30 ms; rank 180 of 200 is 30 ms.
    assert series("p90") == {period_start: 0.03, second_period: 0.2}
    assert series("p99") == {period_start: 0.5, second_period: 0.2}
    assert series("p45") == {period_start: 0.02, second_period: 0.2}
