"""Dev and staging on the aws platform: one instance from the AMI in the environment's subnet.

Health is the instance's status checks (`instance_status_ok`), then, with `aws.smoke_checks: http`,
the app's health path and smoke checks over HTTP from the worker to the instance's private address.
The staging test command runs on the instance (SSM Run Command) against the app on loopback.
Instances are tagged with the environment's deterministic name, so teardown finds them after a
restart, and a retry reuses the running one.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

from immutable.aws.amis import AwsImageError, ec2
from immutable.aws.builders import (
    CHECK_TIMEOUT_S,
    advance_script,
    script_result,
    script_waiter,
    ssm_agent_user_data,
    start_script,
)
from immutable.aws.tags import TAG_REPOSITORY, TAG_ROLE, TAG_RUN

if TYPE_CHECKING:
    from immutable.app_spec import AppSpec, SmokeCheck
    from immutable.config import PlatformConfig
    from immutable.payloads import ImageRef

log = logging.getLogger(__name__)

TAG_ENVIRONMENT = "immutable:environment"
STATUS_TIMEOUT_S = 900.0  # seconds for a new instance to pass its status checks (two to four minutes, usually)


class AwsEnvironments:
    """The platform's `environments` part."""

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config

    def create(
        self, *, kind: str, name: str, spec: AppSpec, image: ImageRef, run_id: str, wait: bool = True
    ) -> dict[str, str]:
        """Launch (or find) the environment's instance from the build region's AMI and wait until it
        passes its status checks; with `wait=False` the caller waits in the triggerer (`pending_create`)."""
        platform, image_id = self.config, image.digest
        placement = platform.aws_settings.environments.get(kind)
        hook = ec2(platform)
        found = hook.find_instances(tags={TAG_ENVIRONMENT: name})
        try:
            if found:
                instance_id = str(found[0]["InstanceId"])
                log.info("%s environment %s already runs as %s", kind, name, instance_id)
            else:
                instance_id = hook.run_instance(
                    image_id=image_id,
                    instance_type=platform.aws_settings.instance_type,
                    subnet_id=placement.subnet_id,
                    security_group_ids=list(placement.security_group_ids),
                    instance_profile=placement.instance_profile,
                    user_data=ssm_agent_user_data(),
                    tags={
                        TAG_ENVIRONMENT: name,
                        TAG_ROLE: kind,
                        TAG_RUN: run_id[:256],
                        TAG_REPOSITORY: spec.repository,
                        "Name": name,
                    },
                )
            if wait:
                hook.wait_instances(instance_ids=[instance_id], state="running")
                hook.wait_status_ok(instance_ids=[instance_id])
            address = hook.describe_instance(instance_id=instance_id).get("PrivateIpAddress", "")
        except Exception as exc:
            self._not_healthy(kind, name, image_id, exc)
        return {
            "name": name,
            "kind": kind,
            "image": image_id,
            "instance_id": instance_id,
            "url": f"http://{address}:{spec.runtime.port}",
            "deadline": str(time.time() + STATUS_TIMEOUT_S),
        }

    def pending_create(self, environment: dict[str, str]) -> tuple[Any, float] | None:
        """None once the instance runs and passes its status checks; a trigger (EC2's own
        `instance_status_ok` waiter, run by the provider's async waiter loop) while it boots. An
        instance impaired, gone, or not ok by its deadline is removed and the error raised."""
        from immutable.aws.triggers import WaiterTrigger

        settings, instance_id = self.config.aws_settings, environment["instance_id"]
        try:
            state = ec2(self.config).describe_instance(instance_id=instance_id).get("State", {}).get("Name")
            status = ec2(self.config).instance_status(instance_id=instance_id)
            if state == "running" and status == "ok":
                return None
            if state not in ("pending", "running") or status == "impaired":
                raise AwsImageError(f"instance {instance_id} is {state}, status checks {status}")
            left_s = float(environment["deadline"]) - time.time()
            if left_s <= 0:
                raise TimeoutError(f"instance {instance_id} is {state}, status checks {status}, past its deadline")
        except Exception as exc:
            self._not_healthy(environment["kind"], environment["name"], environment["image"], exc)
        log.info(
            "%s: instance %s is %s (status checks %s); waiting in the triggerer",
            environment["name"],
            instance_id,
            state,
            status,
        )
        trigger = WaiterTrigger(
            service="ec2",
            waiter_name="instance_status_ok",
            waiter_args={"InstanceIds": [instance_id]},
            description=f"status checks of {instance_id} ({environment['name']})",
            region_name=settings.build_region,
            aws_conn_id=settings.connection_id,
            waiter_delay=settings.wait_poll_s,
            waiter_max_attempts=max(1, int(left_s // settings.wait_poll_s) + 1),
        )
        return trigger, left_s

    def _not_healthy(self, kind: str, name: str, image_id: str, cause: BaseException) -> NoReturn:
        placement = self.config.aws_settings.environments.get(kind)
        removed = self.destroy(name)
        raise AwsImageError(
            f"the {kind} environment {name} from {image_id} in {self.config.aws_settings.build_region} "
            f"(subnet {placement.subnet_id}) did not become healthy: {cause}; removed {removed or 'nothing'}"
        ) from cause

    def smoke_checks(
        self, environment: dict[str, str], *, spec: AppSpec, checks: list[SmokeCheck], version: str
    ) -> list[dict[str, Any]]:
        """HTTP checks from the worker (aws.smoke_checks: http), or the instance's health alone (target_health)."""
        platform = self.config
        status = ec2(platform).instance_status(instance_id=environment["instance_id"])
        if platform.aws_settings.smoke_checks == "target_health":
            detail = f"instance {environment['instance_id']} status checks: {status} (aws.smoke_checks=target_health)"
            return [{"check": "health", "passed": status == "ok", "detail": detail}]
        from immutable.smoke import PROBE_SCRIPT, probe_config

        config = probe_config(environment["url"], spec=spec, checks=checks, version=version)
        result = subprocess.run(
            [sys.executable, "-c", PROBE_SCRIPT, json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=spec.health.timeout_s + 300,
        )
        if result.returncode != 0:
            raise AwsImageError(
                f"the HTTP probe of {environment['url']} failed (exit {result.returncode}): "
                f"{(result.stdout + result.stderr)[-1000:]}"
            )
        return list(json.loads(result.stdout.strip().splitlines()[-1]))

    def start_test_command(self, environment: dict[str, str], *, spec: AppSpec, command: list[str]) -> dict[str, Any]:
        """The staging test command, to run on the instance against the app on loopback, over SSM:
        its agent and then the command are waited for in the triggerer (`test_command_waiter`)."""
        import shlex

        url = f"http://127.0.0.1:{spec.runtime.port}"
        line = " ".join(shlex.quote(part.replace("{url}", url)) for part in command)
        stage = start_script(
            self.config,
            instance_id=environment["instance_id"],
            role=environment["kind"],
            script=[line],
            comment=f"{environment['kind']} test",
            timeout_s=CHECK_TIMEOUT_S,
            context={},
            terminate_on_failure=False,  # the environment's teardown removes it
        )
        return {"ssm": stage}

    def test_command_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        return script_waiter(self.config, running["ssm"]) if "ssm" in running else None

    def finish_test_command(self, running: dict[str, Any]) -> dict[str, Any]:
        """After a wait: the next stage, or once the command has ended its exit code and output."""
        stage = advance_script(self.config, running["ssm"])
        if stage["stage"] != "done":
            return {"ssm": stage}
        result = script_result(stage)
        code = result.exit_code if result.exit_code >= 0 else (0 if result.ok else 1)
        if not result.ok and code == 0:
            code = 1
        return {"exit_code": code, "output": (result.stdout + result.stderr) or f"(SSM {result.status}, no output)"}

    def describe(self, environment: dict[str, str]) -> str:
        return f"instance {environment['instance_id']}"

    def diagnostics(self, environment: dict[str, str]) -> str:
        """Nothing yet: the app's journal is on the instance, which teardown terminates (see the SSM output)."""
        return ""

    def destroy(self, name: str) -> list[str]:
        """Terminate every instance of the environment; returns what was terminated."""
        hook = ec2(self.config)
        found = [str(i["InstanceId"]) for i in hook.find_instances(tags={TAG_ENVIRONMENT: name})]
        hook.terminate_instances(instance_ids=found)
        return [f"instance {i}" for i in found]
