"""App fleets on AWS: one Auto Scaling group per app, region and color, behind the color's ALB
target group; launched from a launch template of the same name pointing at the release's AMI.

Names are deterministic (`<app>-<region>-<color>`) and the group's tags carry app, region, color,
version and digest (the release's AMI id in the build region), so every step looks before it acts.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

from immutable.app_spec import AppSpec
from immutable.config import PlatformConfig

log = logging.getLogger(__name__)

COLORS = ("blue", "green", "canary", "baseline")
TAG_APP = "immutable:app"
TAG_REGION = "immutable:region"
TAG_COLOR = "immutable:color"
TAG_VERSION = "immutable:version"
TAG_DIGEST = "immutable:digest"
LAUNCH_TIMEOUT_S = 900.0  # seconds for a group to fill and its targets to turn healthy
DELETE_TIMEOUT_S = 600.0
# A deferred launch waits in stretches this long: between two, the resumed task reads the group's
# scaling activities (a launch AWS cannot make shows there, not in target health).
LAUNCH_STRETCH_S = 60.0


class FleetError(RuntimeError):
    pass


@dataclass(frozen=True)
class AwsMember:
    name: str  # the instance id
    region: str
    color: str
    version: str
    digest: str
    status: str  # the Auto Scaling lifecycle state

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _template_image(group: dict[str, Any] | None) -> str:
    """The AMI a group launches, as far as its tags tell (for messages)."""
    tags = {t["Key"]: t["Value"] for t in (group or {}).get("Tags", [])}
    return tags.get(TAG_DIGEST, "its image")


def group_name(app: str, region: str, color: str) -> str:
    return f"{app}-{region}-{color}"


def target_group_name(app: str, color: str) -> str:
    """ALB target group names are regional and at most 32 characters."""
    name = f"{app}-{color}"
    if len(name) <= 32:
        return name
    return f"{app[:14]}-{hashlib.sha256(app.encode()).hexdigest()[:6]}-{color}"


class AwsFleets:
    def __init__(self, platform: PlatformConfig) -> None:
        self.platform = platform
        self.settings = platform.aws_settings

    def scaling(self, region: str) -> Any:
        from immutable.aws.hooks.autoscaling import AutoScalingHook

        return AutoScalingHook.for_region(self.platform, region)

    def elb(self, region: str) -> Any:
        from immutable.aws.hooks.elbv2 import ElbV2Hook

        return ElbV2Hook.for_region(self.platform, region)

    def members(self, app: str, region: str, color: str) -> list[AwsMember]:
        group = self.scaling(region).group(group_name(app, region, color))
        if group is None:
            return []
        tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
        return sorted(
            (
                AwsMember(
                    name=i["InstanceId"],
                    region=region,
                    color=color,
                    version=tags.get(TAG_VERSION, "?"),
                    digest=tags.get(TAG_DIGEST, "?"),
                    status=i["LifecycleState"],
                )
                for i in group.get("Instances", [])
            ),
            key=lambda m: m.name,
        )

    def launch(
        self,
        *,
        spec: AppSpec,
        region: str,
        color: str,
        image: str,
        digest: str,
        version: str,
        size: int,
        wait: bool = True,
    ) -> list[AwsMember]:
        """Create the color's group on `image` (an AMI in `region`) and wait until its targets are healthy.

        A group already on the same digest is kept (a retry); on another digest the color is
        taken, which is an error: that fleet must be destroyed first. A launch that fails halfway
        removes what it created. With `wait=False` it returns once the group is created: the caller
        waits in the triggerer (`pending_launch`).
        """
        if color not in COLORS:
            raise FleetError(f"unknown color '{color}'; colors are {COLORS}")
        settings = self.platform.aws_region(region)
        name = group_name(spec.name, region, color)
        scaling, elb = self.scaling(region), self.elb(region)
        existing = scaling.group(name)
        if existing is not None:
            tags = {t["Key"]: t["Value"] for t in existing.get("Tags", [])}
            if tags.get(TAG_DIGEST) != digest:
                raise FleetError(
                    f"{spec.name} in {region}: the {color} group {name} runs another release "
                    f"({tags.get(TAG_VERSION)}, {tags.get(TAG_DIGEST)}); remove it before launching {digest} as {color}"
                )
        tags = {TAG_APP: spec.name, TAG_REGION: region, TAG_COLOR: color, TAG_VERSION: version, TAG_DIGEST: digest}
        target_group = elb.ensure_target_group(
            name=target_group_name(spec.name, color),
            vpc_id=settings.vpc_id,
            port=spec.runtime.port,
            health_path=spec.runtime.health_path,
            tags={TAG_APP: spec.name, TAG_COLOR: color},
        )
        try:
            self._keep_health_checked(spec.name, region)
            if existing is None:
                template_id = scaling.put_launch_template(
                    name=name,
                    image_id=image,
                    instance_type=self.settings.instance_type,
                    security_group_ids=list(settings.security_group_ids),
                    tags=tags,
                )
                scaling.create_group(
                    name=name,
                    template_id=template_id,
                    size=size,
                    subnet_ids=list(settings.subnet_ids),
                    target_group_arn=target_group["TargetGroupArn"],
                    tags=tags,
                )
                log.info(
                    "%s %s: created group %s on %s (%s) with %d instance(s)",
                    spec.name,
                    region,
                    name,
                    image,
                    version,
                    size,
                )
            if wait:
                instances = scaling.wait_in_service(name, size, LAUNCH_TIMEOUT_S)
                elb.wait_targets_healthy(
                    target_group["TargetGroupArn"], [i["InstanceId"] for i in instances], LAUNCH_TIMEOUT_S
                )
        except Exception as exc:
            self._undo_launch(spec.name, region, color, image, exc)
        return self.members(spec.name, region, color)

    def _undo_launch(self, app: str, region: str, color: str, image: str, cause: BaseException) -> NoReturn:
        name = group_name(app, region, color)
        removed = [i for i in self.destroy(app, region, color, force=True) if i != name]
        raise FleetError(
            f"{app} in {region}: launching the {color} group {name} from {image} failed: {cause}. "
            "Removed what the launch created (the group"
            + (f" and its instances {', '.join(removed)}" if removed else "")
            + ", its launch template and target group); fix the cause and run the task again."
        ) from cause

    def pending_launch(
        self, *, spec: AppSpec, region: str, color: str, size: int, started_at: float
    ) -> tuple[Any, float] | None:
        """What a launch made with `wait=False` still waits for: None once `size` targets are
        healthy; else a trigger (the provider's async waiter on target health, one short stretch:
        each resume looks at the scaling activities, so a launch AWS cannot make fails within a
        stretch, not at the timeout) and its timeout in seconds. A launch that failed, or is not
        healthy `LAUNCH_TIMEOUT_S` after `started_at`, is removed and raised as the inline wait does."""

        name = group_name(spec.name, region, color)
        group = self.scaling(region).group(name)
        image = _template_image(group)
        target_group = self.elb(region).target_group(target_group_name(spec.name, color))
        try:
            if group is None or target_group is None:
                raise FleetError(f"the group or its target group is gone ({name})")
            if failed := self.scaling(region).failed_launch(name):
                raise FleetError(f"Auto Scaling group {name} cannot launch its instances: {failed}")
            health = self._checked_health(target_group["TargetGroupArn"], region)
            healthy = sorted(i for i, h in health.items() if h.get("State") == "healthy")
            if len(healthy) >= size:
                return None
            waited_s = time.time() - started_at
            if waited_s > LAUNCH_TIMEOUT_S:
                states = {i: f"{h.get('State')} ({h.get('Reason', '')})" for i, h in health.items()}
                raise TimeoutError(f"{len(healthy)}/{size} targets healthy after {waited_s:.0f}s: {states}")
        except Exception as exc:
            self._undo_launch(spec.name, region, color, image, exc)
        log.info(
            "%s %s: %d/%d of the %s group healthy; waiting in the triggerer",
            spec.name,
            region,
            len(healthy),
            size,
            color,
        )
        return self._health_waiter(spec.name, region, color, target_group["TargetGroupArn"], size)

    def _checked_health(self, target_group_arn: str, region: str) -> dict[str, dict[str, Any]]:
        """The group's target health; an error at once when the load balancer does not check it."""
        health: dict[str, dict[str, Any]] = self.elb(region).target_health(target_group_arn)
        not_checked = sorted(i for i, h in health.items() if h.get("Reason") == "Target.NotInUse")
        if not_checked:
            raise FleetError(
                f"target group {target_group_arn}: {not_checked} are 'unused': no listener forwards to the group, "
                "so the load balancer does not health-check it"
            )
        return health

    def _health_waiter(self, app: str, region: str, color: str, target_group_arn: str, size: int) -> tuple[Any, float]:
        """The provider's async waiter until `size` targets of the color's group are healthy, for one
        stretch (the task looks again when it resumes), and that stretch in seconds."""
        from immutable.aws.triggers import WaiterTrigger

        trigger = WaiterTrigger(
            service="elbv2",
            waiter_name="FleetHealthy",
            waiter_args={"TargetGroupArn": target_group_arn},
            parameters={"size": size},
            description=f"{app} {region}: healthy targets of the {color} group (want {size})",
            region_name=region,
            aws_conn_id=self.settings.connection_id,
            waiter_delay=self.settings.wait_poll_s,
            waiter_max_attempts=max(1, int(LAUNCH_STRETCH_S // self.settings.wait_poll_s)),
        )
        return trigger, LAUNCH_STRETCH_S

    def pending_healthy(self, spec: AppSpec, members: list[AwsMember], *, since: float) -> tuple[Any, float] | None:
        """What a flip waits for between its steps: None while every member's target is healthy;
        else a trigger (the provider's async waiter on the color's target health, one stretch) and
        its timeout. Not healthy `LAUNCH_TIMEOUT_S` after `since`: an error (the flip fails, and the
        release's rollback sends the region back)."""

        if not members:
            return None
        region, color = members[0].region, members[0].color
        target_group = self.elb(region).target_group(target_group_name(spec.name, color))
        if target_group is None:
            raise FleetError(f"{spec.name} in {region}: the {color} target group is missing")
        health = self._checked_health(target_group["TargetGroupArn"], region)
        states = {m.name: str(health.get(m.name, {}).get("State", "not registered")) for m in members}
        if all(state == "healthy" for state in states.values()):
            return None
        waited_s = time.time() - since
        if waited_s > LAUNCH_TIMEOUT_S:
            raise FleetError(
                f"{spec.name} in {region}: the {color} targets are not all healthy after {waited_s:.0f}s: {states}"
            )
        log.info("%s %s: the %s targets are %s; waiting in the triggerer", spec.name, region, color, states)
        return self._health_waiter(spec.name, region, color, target_group["TargetGroupArn"], len(members))

    def target_group_arns(self, app: str, region: str) -> dict[str, str]:
        """Color -> ARN of the app's target groups that exist in the region."""
        elb = self.elb(region)
        groups = {color: elb.target_group(target_group_name(app, color)) for color in COLORS}
        return {color: group["TargetGroupArn"] for color, group in groups.items() if group}

    def _keep_health_checked(self, app: str, region: str, leaving: str | None = None) -> None:
        """Every color's target group but `leaving` stays health-checked, whatever its share of traffic."""
        arns = [arn for color, arn in self.target_group_arns(app, region).items() if color != leaving]
        self.elb(region).keep_health_checked(self.platform.aws_region(region).listener_arn, arns)

    def destroy(self, app: str, region: str, color: str, *, force: bool = False) -> list[str]:
        """Remove the color's group, launch template and target group; its traffic must be gone first.

        `force` allows removing the color that carries the app's last traffic in the region (the
        app is then taken out of the region, as before its first release).
        """
        name = group_name(app, region, color)
        elb = self.elb(region)
        listener = self.platform.aws_region(region).listener_arn
        target_group = elb.target_group(target_group_name(app, color))
        if target_group is not None:
            weights = elb.forward_weights(listener)
            arn = target_group["TargetGroupArn"]
            if arn in weights:
                others = {a: w for a, w in weights.items() if a != arn}
                if weights[arn] > 0 and not any(w > 0 for w in others.values()) and not force:
                    raise FleetError(
                        f"{app} in {region}: the {color} group carries all of the app's traffic; refusing to remove it"
                    )
                elb.set_forward_weights(listener, others, fallback=NO_RELEASE_ACTION)
        members = [m.name for m in self.members(app, region, color)]
        scaling = self.scaling(region)
        deleted = scaling.delete_group(name, DELETE_TIMEOUT_S)
        scaling.delete_launch_template(name)
        if target_group is not None:
            self._keep_health_checked(app, region, leaving=color)  # a group a rule forwards to cannot be deleted
            elb.delete_target_group(target_group_name(app, color))
        if deleted:
            log.info("%s %s: removed group %s (%s)", app, region, name, members)
        return members or ([name] if deleted else [])


# What the listener answers while no release of the app is live in the region.
NO_RELEASE_ACTION: dict[str, Any] = {
    "Type": "fixed-response",
    "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain", "MessageBody": "no release is live"},
}
