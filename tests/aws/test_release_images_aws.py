"""The images half of release_<app> on the aws platform (validate .. summarize) with dag.test()."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from immutable.provenance import LABEL_APP, LABEL_ARTIFACT
from tests.aws.conftest import REGIONS, AwsAccount, run_dag_until
from tests.aws.deferrals import first_event, through_every_wait
from tests.integration.helpers import xcom

OCI = "org.opencontainers.image"
IMAGES_HALF = ["summarize", "destroy_dev_env", "destroy_staging_env"]

pytestmark = pytest.mark.usefixtures("airflow_db")


def this_run(role: str, release: dict[str, Any]) -> list[dict[str, Any]]:
    """EC2 filters for the instances of `role` launched by this module's release run."""
    return [
        {"Name": "tag:immutable:role", "Values": [role]},
        {"Name": "tag:immutable:run", "Values": [release["run"].run_id]},
    ]


def tags_of(image: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


@pytest.fixture(scope="module")
def release(aws_account: AwsAccount, aws_base_candidate: str) -> dict[str, Any]:
    run, states = run_dag_until("releases.py", "release_sample", {"version": "1.0.0"}, IMAGES_HALF)
    assert str(run.state) == "success", states
    assert set(states.values()) == {"success"}, states
    return {
        "run": run,
        "plan": xcom(run, "validate"),
        "packaged": xcom(run, "package"),
        "baked": xcom(run, "bake"),
        "copies": [xcom(run, "copy_to_region", i) for i in range(len(REGIONS))],
        "summary": xcom(run, "summarize"),
        "base": candidate_when_released(aws_account),
    }


def candidate_when_released(account: AwsAccount) -> str:
    """The base AMI on the candidate channel now (other modules may have moved it since the session began)."""
    images = account.client("ec2").describe_images(
        Owners=["self"], Filters=[{"Name": "tag:immutable:channel:candidate", "Values": ["true"]}]
    )["Images"]
    assert len(images) == 1, images
    return str(images[0]["ImageId"])


def test_the_base_is_pinned_by_ami_id(release: dict[str, Any]) -> None:
    assert release["plan"]["base"]["digest"] == release["base"]
    assert release["plan"]["regions"] == list(REGIONS)


def test_the_wheel_is_in_the_artifact_bucket_with_its_sha256(aws_account: AwsAccount, release: dict[str, Any]) -> None:
    packaged = release["packaged"]
    assert packaged["wheel"].startswith("sample_app-1.0.0-")
    body = aws_account.client("s3").get_object(Bucket=aws_account.bucket, Key=packaged["artifact_key"])["Body"].read()
    assert packaged["sha256"] == "sha256:" + hashlib.sha256(body).hexdigest()


def test_the_ami_carries_provenance_and_a_valid_signature(aws_account: AwsAccount, release: dict[str, Any]) -> None:
    from immutable.config import load_platform
    from immutable.platforms import platform_for
    from immutable.signing import SignatureError

    baked = release["baked"]
    image_id = baked["digest"]
    ec2 = aws_account.client("ec2")
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    tags = tags_of(image)
    assert tags[f"{OCI}.version"] == "1.0.0"
    assert tags[f"{OCI}.base.digest"] == release["base"]
    assert tags[LABEL_ARTIFACT] == release["packaged"]["sha256"]
    assert tags[LABEL_APP] == "sample"
    assert tags[f"{OCI}.revision"]
    assert tags[f"{OCI}.created"]
    assert tags["immutable:signature.0"]
    # the bake ran from the base AMI pinned by id, and the builder is gone
    bakers = ec2.describe_instances(Filters=this_run("bake", release))["Reservations"]
    instances = [i for r in bakers for i in r["Instances"]]
    assert {i["ImageId"] for i in instances} == {release["base"]}
    assert {i["State"]["Name"] for i in instances} == {"terminated"}

    images = platform_for(load_platform()).images
    assert images.verify_in(None, baked["repository"], image_id)[f"{OCI}.version"] == "1.0.0"
    # tampering with the provenance breaks the signature
    ec2.create_tags(Resources=[image_id], Tags=[{"Key": f"{OCI}.version", "Value": "6.6.6"}])
    try:
        with pytest.raises(SignatureError, match=image_id):
            images.verify_in(None, baked["repository"], image_id)
    finally:
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": f"{OCI}.version", "Value": "1.0.0"}])


def test_the_bake_waited_for_its_ami_in_the_triggerer(release: dict[str, Any]) -> None:
    baked = release["baked"]
    assert baked["pending"] is False and baked["waited_in_triggerer_s"] >= 0, baked
    assert baked["labels"][f"{OCI}.version"] == "1.0.0", baked  # read once the AMI was available


def test_every_wait_of_a_bake_is_the_triggerers_and_each_resumes_after_a_triggerer_restart(
    aws_account: AwsAccount, release: dict[str, Any]
) -> None:
    """A bake waits three times, each in the triggerer: for the builder's SSM agent to come online,
    for the bake script to end (up to an hour on AWS), for the AMI. Each time the task ends
    deferred; a restarted triggerer goes on from the serialized trigger (the AMI's wait counting from
    the AMI's start); the resumed task takes the next step. The builder runs while the agent and
    the script are waited for, is kept (stopped) while its AMI is made, and is terminated after."""
    from airflow.sdk.exceptions import TaskDeferred

    from immutable.aws.triggers import ImageAvailableTrigger, WaiterTrigger
    from immutable.operators.images import BakeOperator

    run_id = "test-deferred-bake"
    # Another build tag than the module's release, so another AMI name (AWS wants them unique).
    base = release["plan"]["base"] | {"version": f"{release['plan']['base']['version']}-deferred"}
    operator = BakeOperator(task_id="bake", plan=release["plan"] | {"base": base}, packaged=release["packaged"])
    filters = [{"Name": "tag:immutable:role", "Values": ["bake"]}, {"Name": "tag:immutable:run", "Values": [run_id]}]
    ec2 = aws_account.client("ec2")

    def builders() -> set[str]:
        found = ec2.describe_instances(Filters=filters)["Reservations"]
        return {i["State"]["Name"] for r in found for i in r["Instances"]}

    waits: list[str] = []
    image_id = None

    def on_wait(trigger: Any, restarted: Any) -> None:
        nonlocal image_id
        if isinstance(trigger, WaiterTrigger):
            waits.append(trigger.waiter_name)
            assert builders() == {"running"}, (trigger.waiter_name, builders())
        else:
            assert isinstance(trigger, ImageAvailableTrigger), trigger
            waits.append("ImageAvailable")
            image_id = trigger.image_id
            assert builders() == {"stopped"}, "the builder is kept while its AMI is made"
            assert restarted.started_at == trigger.started_at and restarted.missing_grace_s > 0

    with pytest.raises(TaskDeferred) as first:
        operator.execute({"run_id": run_id})
    try:
        done, _ = through_every_wait(operator, first.value, on_wait)
        assert waits == ["AgentOnline", "CommandEnded", "ImageAvailable"], waits
        assert done["digest"] == image_id and done["pending"] is False and done["waited_in_triggerer_s"] >= 0
        assert "builder" not in done, done
        assert done["labels"]["io.immutable.airflow.run-id"] == run_id, done["labels"]
        assert builders() == {"terminated"}
    finally:
        if image_id:
            ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)


def test_dev_and_staging_ran_and_were_terminated(aws_account: AwsAccount, release: dict[str, Any]) -> None:
    ec2 = aws_account.client("ec2")
    for role, subnet in (("dev", aws_account.dev_subnet), ("staging", aws_account.staging_subnet)):
        found = ec2.describe_instances(Filters=this_run(role, release))["Reservations"]
        instances = [i for r in found for i in r["Instances"]]
        assert instances, f"no {role} instance was launched"
        assert {i["SubnetId"] for i in instances} == {subnet}
        assert {i["ImageId"] for i in instances} == {release["baked"]["digest"]}
        assert {i["State"]["Name"] for i in instances} == {"terminated"}


def test_an_environment_waits_in_the_triggerer_for_its_status_checks_then_for_its_staging_test(
    aws_account: AwsAccount, release: dict[str, Any]
) -> None:
    """A staging instance's status checks (minutes on AWS; `initializing` for a moment here) are
    waited for in the triggerer with EC2's own `instance_status_ok` waiter; a new triggerer process
    rebuilds the trigger from its serialized form; the resumed task returns the environment. Then
    its staging test waits in the triggerer too."""
    from airflow.sdk.exceptions import TaskDeferred

    from immutable.aws.triggers import WaiterTrigger
    from immutable.operators.fleets import CreateEnvironmentOperator
    from immutable.platforms import platform_for

    operator = CreateEnvironmentOperator(
        task_id="create_staging_env", kind="staging", plan=release["plan"], baked=release["baked"]
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"run_id": "test-deferred-env"})
    trigger = deferred.value.trigger
    environment = trigger.return_value["work"]  # what the resumed task gets back
    try:
        assert isinstance(trigger, WaiterTrigger) and trigger.waiter_name == "instance_status_ok", trigger
        assert trigger.waiter_args == {"InstanceIds": [environment["instance_id"]]}
        ec2 = aws_account.client("ec2")
        statuses = ec2.describe_instance_status(InstanceIds=[environment["instance_id"]])["InstanceStatuses"]
        assert {s["InstanceStatus"]["Status"] for s in statuses} <= {"initializing"}, statuses
        event = first_event(WaiterTrigger(**trigger.serialize()[1]))
        assert event["status"] == "success", event
        done = operator.execute_complete({}, event)
        assert done["instance_id"] == environment["instance_id"] and done["url"].startswith("http://"), done
        statuses = ec2.describe_instance_status(InstanceIds=[done["instance_id"]])["InstanceStatuses"]
        assert [s["InstanceStatus"]["Status"] for s in statuses] == ["ok"], statuses
        _the_staging_test_waits_in_the_triggerer(aws_account, release, done)
    finally:
        platform_for().environments.destroy(environment["name"])


def _the_staging_test_waits_in_the_triggerer(
    aws_account: AwsAccount, release: dict[str, Any], environment: dict[str, Any]
) -> None:
    """On the ready staging instance, the staging test command runs over SSM: the task waits in the
    triggerer for the instance's agent and then for the command, each trigger rebuilt as a new
    triggerer process would; the resumed task judges the command's exit code. The instance is
    left to the environment's teardown."""
    from airflow.sdk.exceptions import TaskDeferred

    from immutable.app_spec import app_spec
    from immutable.aws.triggers import WaiterTrigger
    from immutable.operators.checks import StagingTestOperator

    operator = StagingTestOperator(task_id="staging_test", plan=release["plan"], environment=environment)
    with pytest.raises(TaskDeferred) as first:
        operator.execute({"run_id": "test-deferred-env"})
    result, waited = through_every_wait(operator, first.value)
    assert all(isinstance(t, WaiterTrigger) and t.service == "ssm" for t in waited), waited
    assert [t.waiter_name for t in waited] == ["AgentOnline", "CommandEnded"], waited
    assert result["exit_code"] == 0, result
    sent = aws_account.client("ssm").list_commands(InstanceId=environment["instance_id"])["Commands"]
    port = app_spec(release["plan"]["app"]).runtime.port
    lines = [line for c in sent if c["Comment"] == "staging test" for line in c["Parameters"]["commands"]]
    assert len(lines) == 1 and f"http://127.0.0.1:{port}" in lines[0], lines
    state = aws_account.client("ec2").describe_instances(InstanceIds=[environment["instance_id"]])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


def test_copies_in_every_region_carry_tags_and_signature(aws_account: AwsAccount, release: dict[str, Any]) -> None:
    from immutable.config import load_platform
    from immutable.platforms import platform_for

    source = release["baked"]["digest"]
    by_region = {c["region"]: c for c in release["copies"]}
    assert set(by_region) == set(REGIONS)
    assert by_region[REGIONS[0]]["image_id"] == source
    images = platform_for(load_platform()).images
    for region in REGIONS[1:]:
        copy_id = by_region[region]["image_id"]
        assert copy_id != source
        image = aws_account.client("ec2", region).describe_images(ImageIds=[copy_id])["Images"][0]
        tags = tags_of(image)
        assert image["State"] == "available"
        assert tags["immutable:source-image"] == source
        assert tags[f"{OCI}.version"] == "1.0.0"
        assert images.digest_in(region, release["baked"]["repository"], source) == copy_id
        assert images.verify_in(region, release["baked"]["repository"], source)[f"{OCI}.version"] == "1.0.0"
    assert release["summary"]["images"] == {r: c["image_id"] for r, c in by_region.items()}


def test_the_amis_sbom_is_in_the_bucket_named_by_a_signed_tag_that_every_copy_carries(
    aws_account: AwsAccount, release: dict[str, Any]
) -> None:
    """The emulator runs no command on the builder, so the list it printed is empty here: the
    document's contents are shown on the local platform (tests/integration/test_sbom.py)."""
    import httpx

    from immutable.aws.sboms import sbom_key
    from immutable.config import load_platform
    from immutable.platforms import platform_for
    from immutable.sbom import validate
    from immutable.signing import SignatureError

    repository, image_id = release["baked"]["repository"], release["baked"]["digest"]
    images = platform_for(load_platform()).images
    tagged = tags_of(aws_account.client("ec2").describe_images(ImageIds=[image_id])["Images"][0])["immutable:sbom"]
    url = images.sbom_url(None, repository, image_id)
    assert url is not None, f"no SBOM link for {image_id}"
    document = httpx.get(url, timeout=10).raise_for_status().content
    validate(document.decode())
    assert tagged == "sha256:" + hashlib.sha256(document).hexdigest()
    described = json.loads(document)["metadata"]["component"]
    assert (described["name"], described["version"]) == (repository, "1.0.0"), described
    for copy in release["copies"]:
        copy_tags = tags_of(
            aws_account.client("ec2", copy["region"]).describe_images(ImageIds=[copy["image_id"]])["Images"][0]
        )
        assert copy_tags["immutable:sbom"] == tagged, copy["region"]
        images.verify_in(copy["region"], repository, image_id)  # the signature covers the tag and the document
        assert images.sbom_url(copy["region"], repository, image_id) is not None

    # Another document in its place: every region refuses the image, naming the SBOM.
    s3, key = aws_account.client("s3"), sbom_key(repository, tagged)
    s3.put_object(Bucket=aws_account.bucket, Key=key, Body=document.replace(b'"1.0.0"', b'"6.6.6"'))
    try:
        for region in REGIONS:
            with pytest.raises(SignatureError, match="is not the one signed"):
                images.verify_in(region, repository, image_id)
    finally:
        s3.put_object(Bucket=aws_account.bucket, Key=key, Body=document)
    images.verify_in(None, repository, image_id)


def test_copy_is_idempotent(aws_account: AwsAccount, release: dict[str, Any]) -> None:
    from immutable.pipelines.release import copy_to_region

    for region in REGIONS[1:]:
        again = copy_to_region(release["plan"], release["baked"], region)
        assert again["image_id"] == next(c["image_id"] for c in release["copies"] if c["region"] == region)
        assert again["copied"] is False
        copies = aws_account.client("ec2", region).describe_images(
            Owners=["self"], Filters=[{"Name": "tag:immutable:source-image", "Values": [release["baked"]["digest"]]}]
        )["Images"]
        assert len(copies) == 1


def test_new_copies_were_waited_for_in_the_triggerer(release: dict[str, Any]) -> None:
    by_region = {c["region"]: c for c in release["copies"]}
    assert "waited_in_triggerer_s" not in by_region[REGIONS[0]]  # the build region's own AMI: nothing to copy
    for region in REGIONS[1:]:
        assert by_region[region]["copied"] is True, by_region[region]
        assert by_region[region]["waited_in_triggerer_s"] >= 0, by_region[region]
        assert by_region[region]["state"] == "available"


def _deregister_copy(account: AwsAccount, region: str, source: str) -> None:
    ec2 = account.client("ec2", region)
    for image in ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "tag:immutable:source-image", "Values": [source]}]
    )["Images"]:
        ec2.deregister_image(ImageId=image["ImageId"])


def test_a_copy_defers_until_available_then_is_verified(aws_account: AwsAccount, release: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from immutable.aws.triggers import ImageAvailableTrigger
    from immutable.operators.region_copy import CopyToRegionOperator

    region, source = REGIONS[2], release["baked"]["digest"]
    _deregister_copy(aws_account, region, source)
    operator = CopyToRegionOperator(task_id="copy", plan=release["plan"], baked=release["baked"], region=region)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, ImageAvailableTrigger) and trigger.region == region
    assert deferred.value.method_name == "execute_complete"
    # The wait counts from the copy's start (its AMI's CreationDate), kept across a triggerer restart.
    assert trigger.started_at == pytest.approx(time.time(), abs=120)
    restarted = ImageAvailableTrigger(**trigger.serialize()[1])
    assert restarted.started_at == trigger.started_at
    event = first_event(trigger)
    assert event["status"] == "success" and event["image_id"] == trigger.image_id, event
    begun_earlier = ImageAvailableTrigger(**(trigger.serialize()[1] | {"started_at": time.time() - 600}))
    assert first_event(begun_earlier)["waited_s"] >= 600
    done = operator.execute_complete(
        {},
        event,
    )
    assert done["image_id"] == trigger.image_id and done["copied"] is True and done["state"] == "available"


def test_a_copy_that_vanishes_while_deferred_fails_naming_region_and_amis(
    aws_account: AwsAccount, release: dict[str, Any]
) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from immutable.aws.amis import AwsImageError
    from immutable.operators.region_copy import CopyToRegionOperator

    region, source = REGIONS[1], release["baked"]["digest"]
    _deregister_copy(aws_account, region, source)
    operator = CopyToRegionOperator(task_id="copy", plan=release["plan"], baked=release["baked"], region=region)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    _deregister_copy(aws_account, region, source)  # as if AWS had failed and removed the copy meanwhile
    event = first_event(deferred.value.trigger)
    assert event["status"] == "error" and "no longer exists" in event["message"], event
    with pytest.raises(AwsImageError, match=rf"copy ami-\w+ of {source} in {region} did not become available"):
        operator.execute_complete(
            {},
            event,
        )
    # A retry starts a clean copy (and the module's later tests find the region whole again).
    with pytest.raises(TaskDeferred) as again:
        operator.execute({})
    operator.execute_complete(
        {},
        first_event(again.value.trigger),
    )


def test_zz_a_revoked_ami_is_refused_in_every_region_from_its_record_in_the_bucket(
    aws_account: AwsAccount, release: dict[str, Any]
) -> None:
    """Last in the module (the name): it revokes the module's release, which the tests above read."""
    from immutable.config import load_platform
    from immutable.pipelines import release as release_steps
    from immutable.platforms import platform_for
    from immutable.revocation import RevokedImageError, deployable
    from tests.aws.conftest import ARTIFACT_BUCKET

    baked, reason = release["baked"], "built from a compromised dependency mirror"
    run, states = run_dag_until(
        "revoke_image.py",
        "revoke_image",
        {"kind": "app", "app": "sample", "reference": "1.0.0", "reason": reason},
        ["revoke"],
    )
    assert str(run.state) == "success", states
    record = xcom(run, "revoke")
    key = f"revocations/{baked['repository']}/{baked['digest']}.json"
    assert (record["digest"], record["version"], record["stored"]) == (
        baked["digest"],
        "1.0.0",
        f"s3://{ARTIFACT_BUCKET}/{key}",
    )
    stored = json.loads(aws_account.client("s3").get_object(Bucket=ARTIFACT_BUCKET, Key=key)["Body"].read())
    assert stored["record"]["reason"] == reason and stored["signature"]
    try:
        platform = platform_for(load_platform())
        for region in REGIONS:  # a copy is refused by its build-region AMI's record
            with pytest.raises(RevokedImageError, match=f"was revoked by .*: {reason}"):
                deployable(platform, region, baked["repository"], baked["digest"])
        with pytest.raises(RevokedImageError, match=reason):
            release_steps.copy_to_region(release["plan"], baked, REGIONS[1])
        # A record someone else wrote (not signed by the pipeline's key) is refused as a record.
        forged = stored | {"record": stored["record"] | {"reason": "nothing"}}
        aws_account.client("s3").put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=json.dumps(forged).encode())
        with pytest.raises(Exception, match="does not verify with the pipeline's key"):
            deployable(platform, REGIONS[0], baked["repository"], baked["digest"])
    finally:
        aws_account.client("s3").delete_object(Bucket=ARTIFACT_BUCKET, Key=key)
    # The base AMI's id is no image of the app's: refused, nothing stored under the app's name.
    wrong, wrong_states = run_dag_until(
        "revoke_image.py",
        "revoke_image",
        {"kind": "app", "app": "sample", "reference": release["base"], "reason": reason},
        ["revoke"],
    )
    assert str(wrong.state) == "failed" and wrong_states["revoke"] == "failed", wrong_states
    listed = aws_account.client("s3").list_objects_v2(Bucket=ARTIFACT_BUCKET, Prefix="revocations/")
    assert listed.get("KeyCount", 0) == 0, listed.get("Contents")
