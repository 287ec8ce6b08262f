"""The project's own AWS waiters (include/aws/waiters/) as the Amazon provider builds them, and the
trigger that waits with them in the triggerer: what each answer of the service makes of the wait."""

from __future__ import annotations

from typing import Any

import pytest

ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/sample-blue/0123456789abcdef"


def fleet_waiter(size: int) -> Any:
    import boto3

    from immutable.aws.hooks.elbv2 import ElbV2Hook

    hook = ElbV2Hook(region_name="eu-west-1", aws_conn_id=None, waiter_parameters={"size": size})
    client = boto3.client("elbv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    return hook.get_waiter("FleetHealthy", client=client)


def outcome(waiter: Any, *states: tuple[str, str]) -> str | None:
    """The state the first matching acceptor gives this DescribeTargetHealth answer (None: wait on)."""
    answer = {
        "TargetHealthDescriptions": [
            {"Target": {"Id": f"i-{n}"}, "TargetHealth": {"State": state, "Reason": reason}}
            for n, (state, reason) in enumerate(states)
        ]
    }
    for acceptor in waiter.config.acceptors:
        if acceptor.matcher_func(answer):
            return str(acceptor.state)
    return None


def test_a_fleet_is_healthy_once_as_many_targets_as_its_size_are() -> None:
    waiter = fleet_waiter(2)
    assert outcome(waiter, ("healthy", ""), ("healthy", "")) == "success"
    assert (
        outcome(waiter, ("healthy", ""), ("healthy", ""), ("draining", "Target.DeregistrationInProgress")) == "success"
    )


def test_a_fleet_still_filling_or_checking_is_waited_for() -> None:
    waiter = fleet_waiter(2)
    assert outcome(waiter) is None  # no instance registered yet
    assert outcome(waiter, ("healthy", "")) is None
    assert outcome(waiter, ("healthy", ""), ("initial", "Elb.InitialHealthChecking")) is None
    assert outcome(waiter, ("unhealthy", "Target.FailedHealthChecks"), ("healthy", "")) is None


def test_a_target_group_no_listener_forwards_to_fails_the_wait_at_once() -> None:
    waiter = fleet_waiter(1)
    assert outcome(waiter, ("unused", "Target.NotInUse")) == "failure"


def test_the_waiter_needs_the_fleet_size() -> None:
    import boto3
    from airflow.exceptions import AirflowException

    from immutable.aws.hooks.elbv2 import ElbV2Hook

    hook = ElbV2Hook(region_name="eu-west-1", aws_conn_id=None)
    client = boto3.client("elbv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with pytest.raises(AirflowException, match="Parameter was not supplied"):
        hook.get_waiter("FleetHealthy", client=client)


def test_the_fleet_trigger_comes_back_whole_from_its_serialized_form() -> None:
    """What a new triggerer process builds from the database row is the same wait."""
    from immutable.aws.triggers import FleetHealthyTrigger

    trigger = FleetHealthyTrigger(
        target_group_arn=ARN,
        size=3,
        return_value={"region": "eu-west-1"},
        region_name="eu-west-1",
        aws_conn_id="aws_default",
        waiter_delay=2,
        waiter_max_attempts=30,
    )
    path, kwargs = trigger.serialize()
    assert path == "immutable.aws.triggers.FleetHealthyTrigger"
    again = FleetHealthyTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)
    assert (again.size, again.waiter_args, again.attempts, again.waiter_delay) == (3, {"TargetGroupArn": ARN}, 30, 2)
    hook = again.hook()
    assert hook.waiter_parameters == {"size": 3} and hook.region_name == "eu-west-1"
