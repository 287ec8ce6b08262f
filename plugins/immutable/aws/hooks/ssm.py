"""SSM: the upstream AMI's public parameter, and Run Command on our builder and test instances."""

from __future__ import annotations

import time
from dataclasses import dataclass

from immutable.aws.hooks.base import RegionalAwsHook, error_code

RUN_SHELL_DOCUMENT = "AWS-RunShellScript"
COMMAND_POLL_S = 2.0  # seconds between polls of a command's status
CONTENT_LIMIT = 24_000  # characters of each stream GetCommandInvocation returns; the rest only in S3
AGENT_POLL_S = 2.0  # seconds between reads of an SSM agent's registration
AGENT_TIMEOUT_S = 900.0  # an agent installed by user data registers within a few minutes
DONE = ("Success", "Failed", "Cancelled", "TimedOut", "DeliveryTimedOut", "ExecutionTimedOut", "Undeliverable")


@dataclass(frozen=True)
class CommandResult:
    command_id: str
    status: str
    exit_code: int
    stdout: str  # at most the first CONTENT_LIMIT characters (SSM's); the whole at stdout_url
    stderr: str
    stdout_url: str = ""  # the complete output in S3, when the command was sent with an output bucket
    stderr_url: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "Success"


class SsmHook(RegionalAwsHook):
    client_type = "ssm"

    def get_parameter(self, *, name: str) -> str | None:
        try:
            return str(self.conn.get_parameter(Name=name)["Parameter"]["Value"])
        except Exception as exc:
            if error_code(exc) == "ParameterNotFound":
                return None
            raise

    def agent_status(self, *, instance_id: str) -> str:
        """The instance's SSM agent: "Online" once it has registered and pings; commands sent before
        that fail with InvalidInstanceId."""
        found = self.conn.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])[
            "InstanceInformationList"
        ]
        return str(found[0].get("PingStatus")) if found else "not registered"

    def agent_not_online(self, instance_id: str, status: str, waited_s: float) -> TimeoutError:
        return TimeoutError(
            f"the SSM agent of {instance_id} in {self.region_name} is {status} after {waited_s:.0f}s: "
            "the instance needs the agent (its user data installs it), an instance profile allowing "
            "AmazonSSMManagedInstanceCore, and HTTPS out to the SSM endpoints (a NAT or VPC endpoints)"
        )

    def wait_agent_online(self, *, instance_id: str, timeout_s: float = AGENT_TIMEOUT_S) -> None:
        """Until the instance's SSM agent has registered and pings (PingStatus Online). The agent
        starts with the instance (or its user data installs it) and then takes from seconds to
        minutes to register."""
        started = time.monotonic()
        while (status := self.agent_status(instance_id=instance_id)) != "Online":
            if time.monotonic() - started > timeout_s:
                raise self.agent_not_online(instance_id, status, timeout_s)
            self.log.info("SSM agent of %s in %s: %s; waiting", instance_id, self.region_name, status)
            time.sleep(AGENT_POLL_S)

    def send_shell(
        self,
        *,
        instance_id: str,
        commands: list[str],
        comment: str,
        timeout_s: int,
        output_bucket: str | None = None,
        output_prefix: str = "ssm-output",
    ) -> str:
        """Send a shell script to run as root on the instance (its agent online); returns the command id.

        With `output_bucket` the instance also writes its complete output there (the invocation
        keeps only the first CONTENT_LIMIT characters of each stream; the result's urls say where)."""
        output = {"OutputS3BucketName": output_bucket, "OutputS3KeyPrefix": output_prefix} if output_bucket else {}
        command_id = str(
            self.conn.send_command(
                InstanceIds=[instance_id],
                DocumentName=RUN_SHELL_DOCUMENT,
                Comment=comment[:100],
                TimeoutSeconds=max(30, timeout_s),
                Parameters={"commands": commands, "executionTimeout": [str(timeout_s)]},
                **output,
            )["Command"]["CommandId"]
        )
        self.log.info("SSM command %s (%s) sent to %s in %s", command_id, comment, instance_id, self.region_name)
        return command_id

    def command_result(self, *, command_id: str, instance_id: str, ended: bool = False) -> CommandResult | None:
        """The command's result once it has ended (None while it runs); with `ended`, whatever it
        is now, a command still running counting as TimedOut (its time is up)."""
        try:
            invocation = self.conn.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except Exception as exc:
            if error_code(exc) != "InvocationDoesNotExist" or ended:
                raise
            invocation = {"Status": "Pending"}
        status = str(invocation.get("Status", "Pending"))
        if status not in DONE and not ended:
            return None
        return CommandResult(
            command_id=command_id,
            status=status if status in DONE else "TimedOut",
            exit_code=int(invocation.get("ResponseCode", -1)),
            stdout=str(invocation.get("StandardOutputContent", "")),
            stderr=str(invocation.get("StandardErrorContent", "")),
            stdout_url=str(invocation.get("StandardOutputUrl") or ""),
            stderr_url=str(invocation.get("StandardErrorUrl") or ""),
        )

    def run_shell(
        self,
        *,
        instance_id: str,
        commands: list[str],
        comment: str,
        timeout_s: int,
        output_bucket: str | None = None,
        output_prefix: str = "ssm-output",
    ) -> CommandResult:
        """Run a shell script as root on the instance and wait for it here (status, exit code, output)."""
        self.wait_agent_online(instance_id=instance_id)
        command_id = self.send_shell(
            instance_id=instance_id,
            commands=commands,
            comment=comment,
            timeout_s=timeout_s,
            output_bucket=output_bucket,
            output_prefix=output_prefix,
        )
        deadline = time.monotonic() + timeout_s + 60
        while True:
            ended = time.monotonic() > deadline
            result = self.command_result(command_id=command_id, instance_id=instance_id, ended=ended)
            if result is not None:
                return result
            time.sleep(COMMAND_POLL_S)
