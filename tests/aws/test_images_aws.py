"""AMI steps on the aws platform against moto: faults, cleanup, encryption, retention, retries."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.aws.conftest import BUILD_REGION, AwsAccount

REPO = "immutable/base"


def new_ami(account: AwsAccount, name: str, tags: dict[str, str], region: str = BUILD_REGION) -> str:
    ec2 = account.client("ec2", region)
    subnet = account.builder_subnet if region == BUILD_REGION else account.regions[region].subnet_ids[0]
    instance = ec2.run_instances(
        ImageId=account.upstream_image_id if region == BUILD_REGION else _any_ami(ec2),
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
    )["Instances"][0]["InstanceId"]
    image_id = str(
        ec2.create_image(
            InstanceId=instance,
            Name=name,
            TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )["ImageId"]
    )
    ec2.terminate_instances(InstanceIds=[instance])
    # As the pipeline does before it uses an AMI: a new one is not found for a moment, then pending.
    ec2.get_waiter("image_exists").wait(ImageIds=[image_id], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return image_id


def _any_ami(ec2: Any) -> str:
    return str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def platform() -> Any:
    from immutable.config import load_platform

    return load_platform()


def test_hooks_use_the_connection_endpoint_and_adaptive_retries(aws_account: AwsAccount) -> None:
    from immutable.aws.hooks.ec2 import Ec2ImageHook
    from immutable.aws.hooks.ssm import SsmHook

    hook = Ec2ImageHook.for_region(platform(), "ap-south-1")
    assert hook.conn.meta.region_name == "ap-south-1"
    assert hook.conn.meta.endpoint_url == aws_account.endpoint
    assert hook.conn.meta.config.retries["mode"] == "adaptive"
    assert hook.conn.meta.config.retries["total_max_attempts"] >= 5
    assert Ec2ImageHook.for_region(platform(), "ap-south-1") is hook  # one client per process and region
    assert SsmHook.for_region(platform(), "ap-south-1").conn.meta.service_model.service_name == "ssm"
    with pytest.raises(Exception, match="region 'eu-central-1' is not defined"):
        Ec2ImageHook.for_region(platform(), "eu-central-1")


def test_throttling_is_retried_with_backoff(aws_account: AwsAccount) -> None:
    """AWS answers Throttling to the first calls: the hook backs off and retries, and the caller
    gets its answer. The throttled answers replace the HTTP exchange (`before-send`), so botocore's
    own retry logic judges them; the call that goes through reaches the moto server."""
    from botocore.awsrequest import AWSResponse

    from immutable.aws import amis

    hook = amis.ec2(platform(), "us-east-1")
    throttled: list[float] = []

    def throttle(request: Any, **_: Any) -> Any:
        if len(throttled) >= 2:
            return None
        throttled.append(time.monotonic())  # when each throttled try was made
        body = b"<Response><Errors><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></Errors>"
        body += b"</Response>"
        return AWSResponse(request.url, 400, {}, RawBody(body))

    hook.conn.meta.events.register("before-send.ec2.DescribeImages", throttle)
    try:
        # Without the retries the Throttling error would be raised here.
        assert hook.get_image(image_id="ami-00000000000000000") is None  # moto's answer: no such image
    finally:
        hook.conn.meta.events.unregister("before-send.ec2.DescribeImages", throttle)
    assert len(throttled) == 2


class RawBody:
    """The raw stream botocore reads a response body from."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body

    def read(self, *_: Any) -> bytes:
        return self.body


def test_an_instance_is_terminated_whatever_happens_inside(aws_account: AwsAccount) -> None:
    from immutable.aws import builders

    settings = platform().aws_settings
    launched: list[str] = []
    with (
        pytest.raises(RuntimeError, match="the bake broke"),
        builders.instance(
            platform(),
            image_id=aws_account.upstream_image_id,
            role="builder",
            run_id="test-cleanup",
            subnet_id=settings.builder.subnet_id,
            security_group_ids=list(settings.builder.security_group_ids),
        ) as instance_id,
    ):
        launched.append(instance_id)
        raise RuntimeError("the bake broke")
    state = aws_account.client("ec2").describe_instances(InstanceIds=launched)["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"
    assert {t["Key"]: t["Value"] for t in state["Tags"]}["immutable:run"] == "test-cleanup"


def test_an_ami_still_pending_when_the_wait_ends_is_kept_and_the_retry_waits_for_it(
    aws_account: AwsAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The realism layer keeps a new AMI pending for 3 s; a wait of 0.5 s ends while it is. AWS may
    still finish it, so it must not be deregistered: the task's retry finds it and waits for it."""
    from immutable.aws import builders
    from immutable.aws.amis import AwsImageError

    ec2 = aws_account.client("ec2")
    instance_id = ec2.run_instances(
        ImageId=aws_account.upstream_image_id, MinCount=1, MaxCount=1, SubnetId=aws_account.builder_subnet
    )["Instances"][0]["InstanceId"]
    tags = {"immutable:repository": "immutable/pending-test", "io.immutable.airflow.run-id": "test-pending"}
    monkeypatch.setattr(builders, "IMAGE_CREATE_TIMEOUT_S", 0.5)
    try:
        with pytest.raises(AwsImageError, match=r"is still pending in eu-west-1 after 0.5s; it is kept") as failed:
            image_id = builders.start_image(
                platform(), instance_id=instance_id, name="immutable-pending-test", description="pending", tags=tags
            )
            builders.settle_image(platform(), image_id=image_id, name="immutable-pending-test")
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])
    filters = [{"Name": "tag:immutable:repository", "Values": ["immutable/pending-test"]}]
    kept = ec2.describe_images(Filters=filters)["Images"]
    assert [image["ImageId"] for image in kept] == [str(failed.value).split()[1]], kept

    monkeypatch.setattr(builders, "IMAGE_CREATE_TIMEOUT_S", 60.0)
    assert builders.own_image(platform(), kept[0]) == kept[0]["ImageId"]
    assert ec2.describe_images(ImageIds=[kept[0]["ImageId"]])["Images"][0]["State"] == "available"
    ec2.deregister_image(ImageId=kept[0]["ImageId"], DeleteAssociatedSnapshots=True)


def test_a_missing_upstream_parameter_names_parameter_and_region(
    aws_account: AwsAccount, aws_platform_file: Any
) -> None:
    from immutable.aws import amis, upstream

    aws_platform_file(lambda d: d["aws"].update(upstream_ami={"ssm_parameter": "/nope/debian", "image_id": None}))
    with pytest.raises(amis.AwsImageError, match=r"/nope/debian does not exist in eu-west-1"):
        upstream.resolve_upstream(platform())


def test_a_missing_upstream_ami_names_ami_and_region(aws_account: AwsAccount, aws_platform_file: Any) -> None:
    from immutable.aws import amis, upstream

    aws_platform_file(lambda d: d["aws"].update(upstream_ami={"ssm_parameter": None, "image_id": "ami-0000dead"}))
    with pytest.raises(amis.AwsImageError, match=r"ami-0000dead .* is not available in eu-west-1"):
        upstream.resolve_upstream(platform())


def test_a_bake_from_a_missing_base_names_it_and_launches_nothing(aws_account: AwsAccount) -> None:
    from immutable.app_spec import app_spec
    from immutable.aws import amis, app_ami
    from immutable.config import load_base_spec

    with pytest.raises(amis.AwsImageError, match=r"base AMI ami-0000beef does not exist in eu-west-1"):
        app_ami.bake_app(
            platform(),
            spec=app_spec("sample"),
            base=load_base_spec(),
            base_image_id="ami-0000beef",
            version="9.9.9",
            build_tag="9.9.9-bx",
            artifact={"bucket": aws_account.bucket, "key": "apps/none", "sha256": "sha256:00"},
            labels={},
            run_id="test-missing-base",
        )
    found = aws_account.client("ec2").describe_instances(
        Filters=[{"Name": "tag:immutable:run", "Values": ["test-missing-base"]}]
    )["Reservations"]
    assert found == []


def test_copying_a_missing_ami_names_it(aws_account: AwsAccount) -> None:
    from immutable.aws import amis, copies

    with pytest.raises(amis.AwsImageError, match=r"AMI ami-0000f00d to copy does not exist in eu-west-1"):
        copies.copy_image(platform(), region="us-east-1", source_image_id="ami-0000f00d")


def test_a_region_not_enabled_is_named(aws_account: AwsAccount, aws_platform_file: Any) -> None:
    from immutable.aws import amis
    from immutable.aws.copies import copy_image

    source = new_ami(aws_account, "immutable-opt-in-test", {"immutable:repository": "apps/optin"})
    us = aws_account.regions["us-east-1"]

    def add_region(document: dict[str, Any]) -> None:
        region = dict(document["regions"][1])
        region["name"] = "me-south-1"  # an opt-in region this account has not enabled
        region["aws"] = dict(region["aws"]) | {"listener_arn": us.listener_arn.replace("us-east-1", "me-south-1")}
        document["regions"].append(region)
        document["rollout"]["waves"][1].append("me-south-1")

    aws_platform_file(add_region)
    with pytest.raises(amis.AwsImageError, match=rf"region me-south-1 is not enabled .* {source} cannot be copied"):
        copy_image(platform(), region="me-south-1", source_image_id=source)
    copies = aws_account.client("ec2", "me-south-1").describe_images(
        Owners=["self"], Filters=[{"Name": "tag:immutable:source-image", "Values": [source]}]
    )["Images"]
    assert copies == []


def test_a_copy_that_fails_is_deregistered_and_named(aws_account: AwsAccount) -> None:
    """The copy starts, then AWS reports it failed: the error names region and AMIs, the copy is gone."""
    from immutable.aws import amis
    from immutable.aws.copies import copy_image

    source = new_ami(aws_account, "immutable-failing-copy", {"immutable:repository": "apps/failing"})
    hook = amis.ec2(platform(), "ap-south-1")

    def copy_failed(params: dict[str, Any], **_: Any) -> Any:
        # What DescribeImages answers for a copy that failed (moto's copies never fail): a
        # before-call handler's answer is used instead of calling the server.
        from botocore.awsrequest import AWSResponse

        asked = params.get("body", {}).get("ImageId.1") if isinstance(params.get("body"), dict) else None
        if asked is None or asked == source:
            return None
        reason = {"Code": "Client.InternalError", "Message": "copy failed"}
        return AWSResponse("", 200, {}, None), {
            "Images": [{"ImageId": asked, "State": "failed", "StateReason": reason}]
        }

    hook.conn.meta.events.register("before-call.ec2.DescribeImages", copy_failed)
    try:
        with pytest.raises(amis.AwsImageError, match=rf"copy (ami-\w+) of {source} in ap-south-1 did not become"):
            copy_image(platform(), region="ap-south-1", source_image_id=source)
    finally:
        hook.conn.meta.events.unregister("before-call.ec2.DescribeImages", copy_failed)
    copies = aws_account.client("ec2", "ap-south-1").describe_images(
        Owners=["self"], Filters=[{"Name": "tag:immutable:source-image", "Values": [source]}]
    )["Images"]
    assert copies == []
    # and a retry copies it again, cleanly
    report = copy_image(platform(), region="ap-south-1", source_image_id=source)
    assert report["copied"] is True and report["state"] == "available"


def test_copies_are_encrypted_with_the_regions_kms_key(aws_account: AwsAccount, aws_platform_file: Any) -> None:
    from immutable.aws import amis, copies

    aws_platform_file(lambda d: d["regions"][1]["aws"].update(kms_key_id="alias/immutable-images"))
    source = new_ami(aws_account, "immutable-kms-test", {"immutable:repository": "apps/kms", "team": "sre"})
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    hook = amis.ec2(platform(), "us-east-1")
    hook.conn.meta.events.register("provide-client-params.ec2.CopyImage", record)
    try:
        report = copies.copy_image(platform(), region="us-east-1", source_image_id=source)
    finally:
        hook.conn.meta.events.unregister("provide-client-params.ec2.CopyImage", record)
    assert report["encrypted"] is True
    assert sent and sent[0]["Encrypted"] is True and sent[0]["KmsKeyId"] == "alias/immutable-images"
    assert sent[0]["SourceRegion"] == BUILD_REGION and sent[0]["ClientToken"]
    copy = aws_account.client("ec2", "us-east-1").describe_images(ImageIds=[report["image_id"]])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in copy["Tags"]}
    assert tags["team"] == "sre" and tags["immutable:source-image"] == source


def test_retention_keeps_the_newest_the_young_and_what_launch_templates_use(aws_account: AwsAccount) -> None:
    from immutable.aws import copies

    repo = "apps/retention"
    made = []
    for n in range(5):
        tags = {"immutable:repository": repo, "org.opencontainers.image.version": f"1.0.{n}"}
        made.append(new_ami(aws_account, f"retention-1.0.{n}", tags))
        time.sleep(1.05)  # CreationDate has second resolution: keep the order unambiguous
    oldest, in_template, channel, newer, newest = made
    ec2 = aws_account.client("ec2")
    ec2.create_launch_template(
        LaunchTemplateName="retention-eu-west-1-blue", LaunchTemplateData={"ImageId": in_template}
    )
    ec2.create_tags(Resources=[channel], Tags=[{"Key": "immutable:channel:stable", "Value": "true"}])
    snapshots = {
        i["ImageId"]: [m["Ebs"]["SnapshotId"] for m in i["BlockDeviceMappings"]]
        for i in ec2.describe_images(ImageIds=made)["Images"]
    }

    young = copies.retention(platform(), repository=repo, now=datetime.now(UTC))  # min_age_days 0: all old enough
    assert {r["image_id"] for r in young[BUILD_REGION]["removed"]} == {oldest}
    report = young[BUILD_REGION]
    kept = {k["image_id"]: k["why"] for k in report["kept"]}
    assert kept[newest].startswith("one of the newest") and kept[newer].startswith("one of the newest")
    assert "launch template retention-eu-west-1-blue" in kept[in_template]
    assert "stable channel" in kept[channel]
    remaining = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert oldest not in remaining and {in_template, channel, newer, newest} <= remaining
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(snapshots[oldest]) & left, "the deregistered AMI's snapshots must be deleted"
    assert set(snapshots[newest]) <= left

    # an image younger than min_age_days is never removed, whatever its rank
    policy_days = platform().aws_settings.image_retention.min_age_days
    again = copies.retention(platform(), repository=repo, now=datetime.now(UTC) - timedelta(days=policy_days + 1))
    assert again[BUILD_REGION]["removed"] == []


def test_retain_images_is_the_release_pipelines_entry_point(aws_account: AwsAccount) -> None:
    from immutable.app_spec import app_spec
    from immutable.pipelines.release import retain_images

    report = retain_images("sample", datetime.now(UTC))
    assert set(report) == {"eu-west-1", "us-east-1", "ap-south-1"}
    repository = app_spec("sample").repository
    for region, outcome in report.items():
        left = aws_account.client("ec2", region).describe_images(
            Owners=["self"], Filters=[{"Name": "tag:immutable:repository", "Values": [repository]}]
        )["Images"]
        assert len(left) == len(outcome["kept"]), region
        assert not {r["image_id"] for r in outcome["removed"]} & {i["ImageId"] for i in left}


def test_the_platform_finds_an_ami_by_id_or_version_and_names_a_missing_copy(aws_account: AwsAccount) -> None:
    from immutable.aws.amis import AwsImageError
    from immutable.aws.platform import AwsPlatform
    from immutable.platforms import platform_for

    aws = platform_for(platform())
    assert isinstance(aws, AwsPlatform)
    tags = {"immutable:repository": "apps/uri", "org.opencontainers.image.version": "2.0.0"}
    source = new_ami(aws_account, "immutable-uri-test", tags)
    assert aws.images.uri(None, "apps/uri", source) == source
    assert aws.images.uri(BUILD_REGION, "apps/uri", source) == source
    assert aws.images.digest_in(BUILD_REGION, "apps/uri", "2.0.0") == source
    assert aws.images.digest_in("us-east-1", "apps/uri", source) is None
    with pytest.raises(AwsImageError, match=rf"no copy of {source} \(apps/uri\) in us-east-1; run the release's copy"):
        aws.images.uri("us-east-1", "apps/uri", source)
    assert aws.images.versions_in(BUILD_REGION, "apps/uri") == ["2.0.0"]
    assert aws.images.build_location() == f"aws:{BUILD_REGION}"
    assert aws.images.base_name("immutable/base", "2026.1.0") == "immutable/base:2026.1.0"


def test_a_signed_ami_is_copied_waited_for_verified_and_described(aws_account: AwsAccount) -> None:
    """The release's copy step through the platform's parts: a copy started now is pending, its
    waiter carries the copy back, finishing verifies the signature in the region."""
    from immutable.aws.amis import AwsImageError
    from immutable.aws.triggers import COPY_TIMEOUT_S, ImageAvailableTrigger
    from immutable.payloads import Baked, ImageRef, RegionCopy
    from immutable.platforms import platform_for

    images = platform_for(platform()).images
    repo = "apps/copied"
    labels = {"immutable:repository": repo, "org.opencontainers.image.version": "3.0.0"}
    source = new_ami(aws_account, "immutable-copy-steps", labels)
    assert images.sign(ImageRef(repository=repo, digest=source)) == "immutable:signature.0"
    baked = Baked(repository=repo, digest=source, tags=["3.0.0"], labels=images.verify_in(None, repo, source))

    here = images.copy_to(BUILD_REGION, baked, wait=False)
    assert (here.image_id, here.copied, here.pending) == (source, False, False)
    started = images.copy_to("us-east-1", baked, wait=False)
    assert started.pending is True and started.copied is True and started.digest == source
    assert started.image_id != source and (started.model_extra or {})["source_image_id"] == source
    trigger, timeout_s = images.copy_waiter(started)
    assert isinstance(trigger, ImageAvailableTrigger) and timeout_s == COPY_TIMEOUT_S
    assert RegionCopy.of(trigger.return_value) == started
    assert trigger.started_at == (started.model_extra or {})["started_at"]

    done = images.finish_copy(baked, RegionCopy.of(trigger.return_value))
    assert done.pending is False and (done.model_extra or {})["state"] == "available"
    assert images.verify_in("us-east-1", repo, source)["org.opencontainers.image.version"] == "3.0.0"
    again = images.copy_to("us-east-1", baked)  # idempotent: found by its source tag
    assert (again.image_id, again.copied, again.pending) == (started.image_id, False, False)

    table = images.describe_copies(baked, [here, done])
    assert started.image_id in table and "already there" in table
    other = done.model_copy(update={"region": "ap-south-1"}).dump() | {"source_image_id": "ami-0other"}
    with pytest.raises(AwsImageError, match=rf"different AMIs: .*ami-0other.*; expected {source}"):
        images.describe_copies(baked, [here, RegionCopy.of(other)])


def test_a_long_command_output_is_read_whole_from_the_bucket(aws_account: AwsAccount) -> None:
    """SSM keeps 24,000 characters of a command's output in the invocation; a dist-upgrade's failure
    is at the end. The instance writes the whole to the artifact bucket and that is what the step reads.
    moto's commands print nothing, so this one invocation is stubbed (botocore's Stubber)."""
    from botocore.stub import ANY, Stubber

    from immutable.aws.builders import run_script
    from immutable.aws.hooks.ssm import CONTENT_LIMIT, SsmHook

    whole = "".join(f"Unpacking libexample{n} (1.0-{n}) ...\n" for n in range(1500))
    whole += "E: Sub-process /usr/bin/dpkg returned an error code (1)\n"
    assert len(whole) > CONTENT_LIMIT
    command = "0f4c1b5e-6d2a-4c8e-9b1f-3a7d2e5c8b90"
    key = f"ssm-output/{command}/i-0123456789abcdef0/awsrunShellScript/0.awsrunShellScript/stdout"
    aws_account.client("s3").put_object(Bucket=aws_account.bucket, Key=key, Body=whole.encode())
    hook = SsmHook.for_region(platform(), BUILD_REGION)
    with Stubber(hook.conn) as stub:
        online = {"InstanceInformationList": [{"InstanceId": "i-0123456789abcdef0", "PingStatus": "Online"}]}
        stub.add_response("describe_instance_information", online, {"Filters": ANY})
        sent = {"OutputS3BucketName": aws_account.bucket, "OutputS3KeyPrefix": "ssm-output"}
        stub.add_response(
            "send_command",
            {"Command": {"CommandId": command}},
            {
                "InstanceIds": ["i-0123456789abcdef0"],
                "DocumentName": "AWS-RunShellScript",
                "Comment": ANY,
                "TimeoutSeconds": ANY,
                "Parameters": ANY,
            }
            | sent,
        )
        stub.add_response(
            "get_command_invocation",
            {
                "Status": "Failed",
                "ResponseCode": 100,
                "StandardOutputContent": whole[:CONTENT_LIMIT],
                "StandardOutputUrl": f"https://s3.{BUILD_REGION}.amazonaws.com/{aws_account.bucket}/{key}",
                "StandardErrorContent": "",
            },
            {"CommandId": command, "InstanceId": "i-0123456789abcdef0"},
        )
        result = run_script(platform(), "i-0123456789abcdef0", ["apt-get -y dist-upgrade"], "dist-upgrade", 60)
    assert result.stdout == whole
    assert result.stdout.endswith("returned an error code (1)\n")


@pytest.mark.parametrize(
    "url",
    [
        "https://s3.eu-west-1.amazonaws.com/my-bucket/ssm-output/c/i/stdout",
        "https://s3.amazonaws.com/my-bucket/ssm-output/c/i/stdout",
        "https://my-bucket.s3.eu-west-1.amazonaws.com/ssm-output/c/i/stdout",
    ],
)
def test_an_s3_url_of_either_style_names_bucket_and_key(url: str) -> None:
    from immutable.aws.builders import s3_location

    assert s3_location(url) == ("my-bucket", "ssm-output/c/i/stdout")
