"""EC2 images and instances: AMIs, builder/test instances, copies, launch templates (read only).

The provider's EC2Hook covers instances only; images, copies and snapshots are here, in its style:
keyword arguments, lazy logging, boto3 waiters, one region per hook.
"""

from __future__ import annotations

import time
from typing import Any

from immutable.aws.hooks.base import RegionalAwsHook, error_code, tag_dict, tag_list

WAITER_DELAY_S = 2  # seconds between polls of a boto3 waiter
WAITER_MAX_ATTEMPTS = 450  # 15 minutes at WAITER_DELAY_S: an AMI of a few GB can take that long
VISIBLE_MAX_ATTEMPTS = 60  # 2 minutes at WAITER_DELAY_S for a new AMI to be known to DescribeImages
SETTLE_POLL_MAX_S = 15.0  # seconds between DescribeImages calls once an AMI has been pending a while
NOT_FOUND = ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable")


class Ec2ImageHook(RegionalAwsHook):
    """AMIs, the instances that make them, and the launch templates that point at them."""

    client_type = "ec2"

    # ---- regions -------------------------------------------------------------------------------

    def region_enabled(self) -> bool:
        """Whether this hook's region is enabled for the account (opt-in regions may not be)."""
        regions = self.conn.describe_regions(
            AllRegions=True, Filters=[{"Name": "region-name", "Values": [self.region_name]}]
        )["Regions"]
        mine = [r for r in regions if r.get("RegionName") == self.region_name]
        return bool(mine) and mine[0].get("OptInStatus") in (None, "opt-in-not-required", "opted-in")

    # ---- images --------------------------------------------------------------------------------

    def get_image(self, *, image_id: str) -> dict[str, Any] | None:
        """The image, or None when it does not exist (or is not visible) in this region."""
        try:
            images = self.conn.describe_images(ImageIds=[image_id])["Images"]
        except Exception as exc:
            if error_code(exc) in NOT_FOUND:
                return None
            raise
        return images[0] if images else None

    def find_images(self, *, tags: dict[str, str], owners: list[str] | None = None) -> list[dict[str, Any]]:
        """Images owned by us carrying every given tag, newest first."""
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]
        images = self.conn.describe_images(Owners=owners or ["self"], Filters=filters)["Images"]
        return sorted(images, key=lambda i: str(i.get("CreationDate", "")), reverse=True)

    def image_tags(self, image: dict[str, Any]) -> dict[str, str]:
        return tag_dict(image.get("Tags"))

    def create_image(self, *, instance_id: str, name: str, description: str, tags: dict[str, str]) -> str:
        image_id = self.conn.create_image(
            InstanceId=instance_id,
            Name=name,
            Description=description[:255],
            TagSpecifications=[{"ResourceType": "image", "Tags": tag_list(tags)}],
        )["ImageId"]
        self.log.info("Creating image %s (%s) from %s in %s", image_id, name, instance_id, self.region_name)
        return str(image_id)

    def copy_image(
        self,
        *,
        source_image_id: str,
        source_region: str,
        name: str,
        description: str,
        client_token: str,
        tags: dict[str, str],
        kms_key_id: str | None = None,
    ) -> str:
        """Start a copy into this hook's region, tagged as it is created (so it is found again even if
        this process dies at once); `client_token` makes a retried call return the same copy."""
        kwargs: dict[str, Any] = {
            "SourceImageId": source_image_id,
            "SourceRegion": source_region,
            "Name": name,
            "Description": description[:255],
            "ClientToken": client_token[:64],
            "TagSpecifications": [
                {"ResourceType": "image", "Tags": tag_list(tags)},
                {"ResourceType": "snapshot", "Tags": tag_list(tags)},
            ],
        }
        if kms_key_id:
            kwargs |= {"Encrypted": True, "KmsKeyId": kms_key_id}
        image_id = self.conn.copy_image(**kwargs)["ImageId"]
        self.log.info("Copying %s from %s to %s as %s", source_image_id, source_region, self.region_name, image_id)
        return str(image_id)

    def create_tags(self, *, resource_ids: list[str], tags: dict[str, str]) -> None:
        if tags:
            self.conn.create_tags(Resources=resource_ids, Tags=tag_list(tags))

    def delete_tags(self, *, resource_ids: list[str], keys: list[str]) -> None:
        if keys:
            self.conn.delete_tags(Resources=resource_ids, Tags=[{"Key": k} for k in keys])

    def wait_image_visible(self, *, image_id: str) -> None:
        """Until DescribeImages knows the image: right after CreateImage or CopyImage it may answer
        InvalidAMIID.NotFound for a while (eventual consistency), which is not a failure."""
        self.conn.get_waiter("image_exists").wait(
            ImageIds=[image_id], WaiterConfig={"Delay": WAITER_DELAY_S, "MaxAttempts": VISIBLE_MAX_ATTEMPTS}
        )

    def wait_image_available(self, *, image_id: str, max_attempts: int = WAITER_MAX_ATTEMPTS) -> None:
        self.log.info("Waiting for image %s in %s to be available", image_id, self.region_name)
        self.wait_image_visible(image_id=image_id)
        self.conn.get_waiter("image_available").wait(
            ImageIds=[image_id], WaiterConfig={"Delay": WAITER_DELAY_S, "MaxAttempts": max_attempts}
        )

    def wait_image_settled(self, *, image_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The image once it is no longer `pending` (available, failed...), or as it is when `timeout_s`
        has passed; None if it vanished. Looks again soon at first (a small AMI takes seconds), then
        every SETTLE_POLL_MAX_S: an image of most of an hour costs a few hundred calls."""
        self.wait_image_visible(image_id=image_id)
        started = time.monotonic()
        while True:
            image = self.get_image(image_id=image_id)
            waited = time.monotonic() - started
            if image is None or image.get("State") != "pending" or waited >= timeout_s:
                return image
            self.log.info("%s in %s is pending after %.0fs", image_id, self.region_name, waited)
            time.sleep(min(SETTLE_POLL_MAX_S, WAITER_DELAY_S + waited / 4, timeout_s - waited))

    def deregister_image(self, *, image_id: str) -> list[str]:
        """Deregister the image with its EBS snapshots; returns the snapshot ids.

        AWS deletes the snapshots itself (DeleteAssociatedSnapshots): deleting them right after
        the deregistration would meet InvalidSnapshot.InUse while the AMI still holds them."""
        image = self.get_image(image_id=image_id)
        if image is None:
            return []
        snapshots = [
            m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")
        ]
        self.conn.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
        self.log.info("Deregistered %s in %s with its snapshots %s", image_id, self.region_name, snapshots)
        return snapshots

    # ---- instances -----------------------------------------------------------------------------

    def run_instance(
        self,
        *,
        image_id: str,
        instance_type: str,
        subnet_id: str,
        security_group_ids: list[str],
        tags: dict[str, str],
        instance_profile: str | None = None,
        user_data: str | None = None,
        client_token: str | None = None,
    ) -> str:
        kwargs: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": subnet_id,
            "SecurityGroupIds": security_group_ids,
            "MetadataOptions": {"HttpTokens": "required"},  # IMDSv2 only
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list(tags)},
                {"ResourceType": "volume", "Tags": tag_list(tags)},
            ],
        }
        if instance_profile:
            kwargs["IamInstanceProfile"] = {"Name": instance_profile}
        if user_data:
            kwargs["UserData"] = user_data
        if client_token:
            kwargs["ClientToken"] = client_token[:64]
        instance_id = str(self.conn.run_instances(**kwargs)["Instances"][0]["InstanceId"])
        self.log.info("Launched %s from %s in %s (%s)", instance_id, image_id, subnet_id, self.region_name)
        return instance_id

    def find_instances(self, *, tags: dict[str, str]) -> list[dict[str, Any]]:
        """Instances (not yet terminated) carrying every given tag."""
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]
        filters.append({"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]})
        reservations = self.conn.describe_instances(Filters=filters)["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def describe_instance(self, *, instance_id: str) -> dict[str, Any]:
        reservations = self.conn.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return dict(reservations[0]["Instances"][0])

    def wait_instances(self, *, instance_ids: list[str], state: str) -> None:
        """state: running | stopped | terminated (the boto3 waiters `instance_<state>`)."""
        self.log.info("Waiting for %s in %s to be %s", instance_ids, self.region_name, state)
        self.conn.get_waiter(f"instance_{state}").wait(
            InstanceIds=instance_ids, WaiterConfig={"Delay": WAITER_DELAY_S, "MaxAttempts": WAITER_MAX_ATTEMPTS}
        )

    def wait_status_ok(self, *, instance_ids: list[str]) -> None:
        """Both EC2 status checks (system and instance) pass: the instance booted and answers."""
        self.log.info("Waiting for the status checks of %s in %s", instance_ids, self.region_name)
        self.conn.get_waiter("instance_status_ok").wait(
            InstanceIds=instance_ids, WaiterConfig={"Delay": WAITER_DELAY_S, "MaxAttempts": WAITER_MAX_ATTEMPTS}
        )

    def instance_status(self, *, instance_id: str) -> str:
        """ok | impaired | initializing | insufficient-data | not-applicable, or 'none' when not running."""
        statuses = self.conn.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
        return str(statuses[0]["InstanceStatus"]["Status"]) if statuses else "none"

    def stop_instance(self, *, instance_id: str) -> None:
        self.conn.stop_instances(InstanceIds=[instance_id])
        self.wait_instances(instance_ids=[instance_id], state="stopped")

    def terminate_instances(self, *, instance_ids: list[str], wait: bool = True) -> None:
        if not instance_ids:
            return
        self.log.info("Terminating %s in %s", instance_ids, self.region_name)
        self.conn.terminate_instances(InstanceIds=instance_ids)
        if wait:
            self.wait_instances(instance_ids=instance_ids, state="terminated")

    # ---- launch templates (read only: the fleets own them) -------------------------------------

    def images_in_launch_templates(self) -> dict[str, list[str]]:
        """{image id: [template name@version, ...]} for every template's default and latest version."""
        used: dict[str, list[str]] = {}
        paginator = self.conn.get_paginator("describe_launch_templates")
        for page in paginator.paginate():
            for template in page["LaunchTemplates"]:
                name = template["LaunchTemplateName"]
                for version in ("$Default", "$Latest"):
                    versions = self.conn.describe_launch_template_versions(
                        LaunchTemplateId=template["LaunchTemplateId"], Versions=[version]
                    )["LaunchTemplateVersions"]
                    for v in versions:
                        image_id = v.get("LaunchTemplateData", {}).get("ImageId")
                        if image_id:
                            used.setdefault(image_id, []).append(f"{name}@{v['VersionNumber']}")
        return used
