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


def test_a_waiter_trigger_comes_back_whole_from_its_serialized_form() -> None:
    """What a new triggerer process builds from the database row is the same wait."""
    from immutable.aws.triggers import WaiterTrigger

    trigger = WaiterTrigger(
        service="elbv2",
        waiter_name="FleetHealthy",
        waiter_args={"TargetGroupArn": ARN},
        parameters={"size": 3},
        description="sample eu-west-1: healthy targets of the blue group (want 3)",
        return_value={"region": "eu-west-1"},
        region_name="eu-west-1",
        aws_conn_id="aws_default",
        waiter_delay=2,
        waiter_max_attempts=30,
    )
    path, kwargs = trigger.serialize()
    assert path == "immutable.aws.triggers.WaiterTrigger"
    again = WaiterTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)
    assert (again.waiter_args, again.attempts, again.waiter_delay) == ({"TargetGroupArn": ARN}, 30, 2)
    hook = again.hook()
    assert type(hook).__name__ == "ElbV2Hook"
    assert hook.waiter_parameters == {"size": 3} and hook.region_name == "eu-west-1"


def test_a_waiter_trigger_for_a_service_without_a_hook_is_refused() -> None:
    from immutable.aws.triggers import WaiterTrigger

    with pytest.raises(ValueError, match="no waiter hook for 'rds'"):
        WaiterTrigger(
            service="rds",
            waiter_name="db_instance_available",
            waiter_args={},
            description="",
            region_name="eu-west-1",
            aws_conn_id=None,
            waiter_delay=1,
            waiter_max_attempts=1,
        )


def ssm_waiter(name: str) -> Any:
    import boto3

    from immutable.aws.hooks.ssm import SsmHook

    hook = SsmHook(region_name="eu-west-1", aws_conn_id=None)
    client = boto3.client("ssm", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    return hook.get_waiter(name, client=client)


def first_match(waiter: Any, answer: dict[str, Any]) -> str | None:
    for acceptor in waiter.config.acceptors:
        if acceptor.matcher != "error" and acceptor.matcher_func(answer):
            return str(acceptor.state)
    return None


def test_an_agent_is_waited_for_until_it_pings_online() -> None:
    waiter = ssm_waiter("AgentOnline")
    assert first_match(waiter, {"InstanceInformationList": []}) is None
    assert first_match(waiter, {"InstanceInformationList": [{"PingStatus": "ConnectionLost"}]}) is None
    assert first_match(waiter, {"InstanceInformationList": [{"PingStatus": "Online"}]}) == "success"


@pytest.mark.parametrize("status", ["Success", "Failed", "Cancelled", "TimedOut", "ExecutionTimedOut"])
def test_a_command_wait_ends_with_the_command_whatever_its_result(status: str) -> None:
    """The task judges the result (and terminates the builder on a failure), so every end is an end."""
    assert first_match(ssm_waiter("CommandEnded"), {"Status": status}) == "success"


@pytest.mark.parametrize("status", ["Pending", "InProgress", "Delayed"])
def test_a_command_still_running_is_waited_for(status: str) -> None:
    assert first_match(ssm_waiter("CommandEnded"), {"Status": status}) is None
