"""Waiting in the triggerer, so a wait of many minutes holds no worker slot: for an AMI (a copy, or
one being created from a builder), and for a fleet to turn healthy.

Fleets, SSM agents and commands, and instances' status checks are waited for by `WaiterTrigger`,
the Amazon provider's async waiter loop (aiobotocore, pinned with the botocore it accepts). An AMI
is still waited for by `ImageAvailableTrigger`, which polls DescribeImages with the synchronous
hook in a thread: its wait and timeout count from when the copy or image began, so a restarted
triggerer does not start them over, and it tells a new AMI not visible yet from one gone. Moving
it onto a waiter means the resumed task judging those instead, as a fleet's launch does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger
from airflow.triggers.base import BaseTrigger, TriggerEvent

COPY_POLL_S = 15.0  # seconds between DescribeImages calls while a copy is pending
FIRST_POLL_S = 2.0  # seconds before the second look at a copy that has just begun
COPY_TIMEOUT_S = 3 * 3600.0  # a large encrypted AMI copied across the world can take well over an hour
# EC2 is eventually consistent: an AMI just created may be "not found" for a moment; that long, a
# missing AMI is one not visible yet, not one gone.
CREATED_NOT_FOUND_S = 120.0
FAILED_STATES = ("failed", "invalid", "error", "deregistered", "disabled")


class ImageAvailableTrigger(BaseTrigger):
    """Fires once the AMI is available in its region ("success"), or failed, vanished or timed out ("error").

    An AMI not found within `missing_grace_s` of `started_at` is one not visible yet (a new AMI);
    after that, one gone. The event carries `image_id`, `region`, `state`, `waited_s`, on error `message`, and
    `return_value` as given (what the deferring task needs when it resumes, as the provider's
    waiter triggers do). `started_at` (epoch seconds, default: now) is when the copy began: the
    wait and its timeout count from there, so a triggerer restart does not start them over."""

    def __init__(
        self,
        *,
        region: str,
        image_id: str,
        aws_conn_id: str,
        poll_s: float = COPY_POLL_S,
        timeout_s: float = COPY_TIMEOUT_S,
        return_value: Any = None,
        started_at: float | None = None,
        missing_grace_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.missing_grace_s = missing_grace_s
        self.region = region
        self.image_id = image_id
        self.aws_conn_id = aws_conn_id
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.return_value = return_value
        self.started_at = time.time() if started_at is None else started_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "region": self.region,
                "image_id": self.image_id,
                "aws_conn_id": self.aws_conn_id,
                "poll_s": self.poll_s,
                "timeout_s": self.timeout_s,
                "return_value": self.return_value,
                "started_at": self.started_at,
                "missing_grace_s": self.missing_grace_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from immutable.aws.hooks.ec2 import Ec2ImageHook

        hook = Ec2ImageHook(region_name=self.region, aws_conn_id=self.aws_conn_id)
        while True:
            waited_s = round(time.time() - self.started_at, 1)
            event: dict[str, Any] = {
                "image_id": self.image_id,
                "region": self.region,
                "waited_s": waited_s,
                "return_value": self.return_value,
            }
            try:
                image = await asyncio.to_thread(hook.get_image, image_id=self.image_id)
            except Exception as exc:  # throttling is retried by the hook; anything left is reported
                yield TriggerEvent(event | {"status": "error", "state": "unknown", "message": f"DescribeImages: {exc}"})
                return
            state = str(image.get("State", "")) if image else "missing"
            event["state"] = state
            if state == "available":
                yield TriggerEvent(event | {"status": "success"})
                return
            not_visible_yet = image is None and waited_s < self.missing_grace_s
            if (image is None and not not_visible_yet) or state in FAILED_STATES:
                reason = (image or {}).get("StateReason", {}).get("Message") or "no reason given"
                why = "it no longer exists" if image is None else f"it is {state} ({reason})"
                yield TriggerEvent(event | {"status": "error", "message": why})
                return
            if waited_s >= self.timeout_s:
                message = f"it is still {state} after {waited_s:.0f}s"
                yield TriggerEvent(event | {"status": "error", "message": message})
                return
            self.log.info("%s in %s is %s after %.0fs", self.image_id, self.region, state, waited_s)
            # Soon after the copy began, look again soon (a small AMI is done in seconds); later every
            # poll_s: a copy of many minutes costs a handful of calls.
            await asyncio.sleep(min(self.poll_s, FIRST_POLL_S + waited_s / 4))


# The hooks the project's waiters are asked of, by service (their waiters: include/aws/waiters/).
WAITER_HOOKS = {
    "ec2": "immutable.aws.hooks.ec2.Ec2ImageHook",
    "elbv2": "immutable.aws.hooks.elbv2.ElbV2Hook",
    "ssm": "immutable.aws.hooks.ssm.SsmHook",
}


class WaiterTrigger(AwsBaseWaiterTrigger):
    """One boto waiter, run in the triggerer by the Amazon provider's async waiter loop: one of the
    project's (include/aws/waiters/<service>.json, with `parameters` filled into its acceptors,
    such as a fleet's size) or the service's own (such as EC2's `instance_status_ok`).

    The event says "success" or "error" and carries `return_value` in `value`. The task that
    deferred judges the state again when it resumes, so a wait that ran out of attempts, or a
    triggerer restart (which starts the attempts over), changes nothing but the count."""

    def __init__(
        self,
        *,
        service: str,
        waiter_name: str,
        waiter_args: dict[str, Any],
        description: str,
        region_name: str,
        aws_conn_id: str | None,
        waiter_delay: int,
        waiter_max_attempts: int,
        parameters: dict[str, Any] | None = None,
        return_value: Any = None,
        **kwargs: Any,
    ) -> None:
        if service not in WAITER_HOOKS:
            raise ValueError(f"no waiter hook for {service!r}; services are {sorted(WAITER_HOOKS)}")
        super().__init__(
            serialized_fields={
                "service": service,
                "waiter_name": waiter_name,
                "waiter_args": waiter_args,
                "description": description,
                "parameters": parameters,
                "return_value": return_value,
            },
            waiter_name=waiter_name,
            waiter_args=waiter_args,
            failure_message=f"{description}: failed",
            status_message=description,
            status_queries=[],
            return_value=return_value,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            **kwargs,
        )
        self.service = service
        self.description = description
        self.parameters = parameters

    def hook(self) -> Any:
        from importlib import import_module

        module, _, name = WAITER_HOOKS[self.service].rpartition(".")
        hook_class = getattr(import_module(module), name)
        return hook_class(**self._hook_parameters, waiter_parameters=self.parameters)
