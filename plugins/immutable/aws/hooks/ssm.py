"""SSM: the upstream AMI's public parameter, and Run Command on our builder and test instances."""

from __future__ import annotations

import time
from dataclasses import dataclass

from immutable.aws.hooks.base import RegionalAwsHook, error_code

RUN_SHELL_DOCUMENT = "AWS-RunShellScript"
COMMAND_POLL_S = 2.0  # seconds between polls of a command's status
DONE = ("Success", "Failed", "Cancelled", "TimedOut", "DeliveryTimedOut", "ExecutionTimedOut", "Undeliverable")


@dataclass(frozen=True)
class CommandResult:
    command_id: str
    status: str
    exit_code: int
    stdout: str
    stderr: str

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

    def run_shell(self, *, instance_id: str, commands: list[str], comment: str, timeout_s: int) -> CommandResult:
        """Run a shell script as root on the instance and wait for it (status, exit code, output)."""
        command_id = str(
            self.conn.send_command(
                InstanceIds=[instance_id],
                DocumentName=RUN_SHELL_DOCUMENT,
                Comment=comment[:100],
                TimeoutSeconds=max(30, timeout_s),
                Parameters={"commands": commands, "executionTimeout": [str(timeout_s)]},
            )["Command"]["CommandId"]
        )
        self.log.info("SSM command %s (%s) sent to %s in %s", command_id, comment, instance_id, self.region_name)
        deadline = time.monotonic() + timeout_s + 60
        while True:
            try:
                invocation = self.conn.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            except Exception as exc:
                if error_code(exc) != "InvocationDoesNotExist" or time.monotonic() > deadline:
                    raise
                invocation = {"Status": "Pending"}
            status = str(invocation.get("Status", "Pending"))
            if status in DONE or time.monotonic() > deadline:
                return CommandResult(
                    command_id=command_id,
                    status=status if status in DONE else "TimedOut",
                    exit_code=int(invocation.get("ResponseCode", -1)),
                    stdout=str(invocation.get("StandardOutputContent", "")),
                    stderr=str(invocation.get("StandardErrorContent", "")),
                )
            time.sleep(COMMAND_POLL_S)
