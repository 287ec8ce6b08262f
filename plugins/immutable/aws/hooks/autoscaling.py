"""Auto Scaling groups and their launch templates, one group per app, region and color."""

from __future__ import annotations

import time
from typing import Any

from immutable.aws.hooks import RegionalAwsHook

POLL_S = 5.0  # seconds between looks at a group that is filling or draining
# Launch failures that pass by themselves: Auto Scaling tries again (another zone, a moment later).
TRANSIENT_LAUNCH_ERRORS = ("InsufficientInstanceCapacity", "RequestLimitExceeded", "Server.InternalError")


class AutoScalingHook(RegionalAwsHook):
    """Auto Scaling (and the EC2 launch templates its groups launch from) in one region."""

    client_type = "autoscaling"

    def _ec2(self) -> Any:
        """Launch templates are EC2's: the same connection and region, the EC2 client."""
        return _LaunchTemplates(region_name=str(self.region_name), aws_conn_id=self.aws_conn_id).conn

    def group(self, name: str) -> dict[str, Any] | None:
        groups = self.conn.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return groups[0] if groups else None

    def put_launch_template(
        self, *, name: str, image_id: str, instance_type: str, security_group_ids: list[str], tags: dict[str, str]
    ) -> str:
        """Create the template, or a new default version of it pointing at `image_id`; returns its id."""
        ec2 = self._ec2()
        data = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "SecurityGroupIds": security_group_ids,
            # IMDSv2 only, as for the builders: a request forged through the app cannot read the
            # instance role's credentials with a plain GET.
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        }
        found = ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": [name]}])[
            "LaunchTemplates"
        ]
        if not found:
            created = ec2.create_launch_template(
                LaunchTemplateName=name,
                LaunchTemplateData=data,
                TagSpecifications=[
                    {"ResourceType": "launch-template", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                ],
            )
            return str(created["LaunchTemplate"]["LaunchTemplateId"])
        template_id = str(found[0]["LaunchTemplateId"])
        version = ec2.create_launch_template_version(LaunchTemplateId=template_id, LaunchTemplateData=data)
        number = str(version["LaunchTemplateVersion"]["VersionNumber"])
        ec2.modify_launch_template(LaunchTemplateId=template_id, DefaultVersion=number)
        return template_id

    def delete_launch_template(self, name: str) -> bool:
        ec2 = self._ec2()
        found = ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": [name]}])[
            "LaunchTemplates"
        ]
        if not found:
            return False
        ec2.delete_launch_template(LaunchTemplateId=found[0]["LaunchTemplateId"])
        return True

    def create_group(
        self,
        *,
        name: str,
        template_id: str,
        size: int,
        subnet_ids: list[str],
        target_group_arn: str,
        tags: dict[str, str],
    ) -> None:
        self.conn.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": template_id, "Version": "$Default"},
            MinSize=size,
            MaxSize=size,
            DesiredCapacity=size,
            VPCZoneIdentifier=",".join(subnet_ids),
            TargetGroupARNs=[target_group_arn],
            HealthCheckType="ELB",
            HealthCheckGracePeriod=60,
            Tags=[
                {
                    "Key": k,
                    "Value": v,
                    "PropagateAtLaunch": True,
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                }
                for k, v in tags.items()
            ],
        )

    def wait_in_service(self, name: str, size: int, timeout_s: float) -> list[dict[str, Any]]:
        """Until `size` instances of the group are InService; returns them. A launch that fails (the
        group's scaling activities say so) is an error at once, with AWS's reason: Auto Scaling
        would only try again and again with the same template."""
        deadline = time.monotonic() + timeout_s
        while True:
            group = self.group(name)
            instances = [i for i in (group or {}).get("Instances", []) if i["LifecycleState"] == "InService"]
            if len(instances) >= size:
                return instances
            if failed := self.failed_launch(name):
                raise RuntimeError(f"Auto Scaling group {name} cannot launch its instances: {failed}")
            if time.monotonic() > deadline:
                states = [(i["InstanceId"], i["LifecycleState"]) for i in (group or {}).get("Instances", [])]
                raise TimeoutError(
                    f"Auto Scaling group {name}: {len(instances)}/{size} in service after {timeout_s}s: {states}"
                )
            time.sleep(POLL_S)

    def failed_launch(self, name: str) -> str | None:
        """The reason of the group's latest failed launch, unless it is one that a later attempt may
        overcome (no capacity in the zone at this moment); None when none failed."""
        activities = self.conn.describe_scaling_activities(AutoScalingGroupName=name, MaxRecords=10)["Activities"]
        for activity in activities:  # newest first
            if activity.get("StatusCode") == "Successful":
                return None
            message = str(activity.get("StatusMessage") or activity.get("Description") or "")
            if activity.get("StatusCode") in ("Failed", "Cancelled") and not any(
                transient in message for transient in TRANSIENT_LAUNCH_ERRORS
            ):
                return message
        return None

    def delete_group(self, name: str, timeout_s: float) -> bool:
        """Delete the group and its instances; returns False when it did not exist."""
        if self.group(name) is None:
            return False
        self.conn.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
        deadline = time.monotonic() + timeout_s
        while self.group(name) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Auto Scaling group {name} still exists {timeout_s}s after its deletion")
            time.sleep(POLL_S)
        return True

    def groups_tagged(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        paginator = self.conn.get_paginator("describe_auto_scaling_groups")
        return [g for page in paginator.paginate(Filters=filters) for g in page["AutoScalingGroups"]]


class _LaunchTemplates(RegionalAwsHook):
    client_type = "ec2"
