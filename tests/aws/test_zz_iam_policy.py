"""The least-privilege IAM policy (include/aws/iam-policy.json) covers every AWS call the code made.

Collected last in tests/aws (the name), so the recorder in conftest.py has seen the calls of every
other test of the session: base and app images, copies, environments, fleets, traffic, metrics.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from tests.aws.conftest import RECORDER, ApiCallRecorder
from tests.conftest import ROOT, require

POLICY = ROOT / "include" / "aws" / "iam-policy.json"
STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}


def load_policy(path: Path = POLICY) -> dict[str, Any]:
    document = json.loads(path.read_text())
    assert isinstance(document, dict)
    return document


def allowed_actions(policy: dict[str, Any]) -> list[str]:
    actions: list[str] = []
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow":
            value = statement["Action"]
            actions += [value] if isinstance(value, str) else list(value)
    return actions


def not_covered(calls: dict[str, int], policy: dict[str, Any]) -> list[str]:
    patterns = [a.lower() for a in allowed_actions(policy)]
    return sorted(c for c in calls if not any(fnmatchcase(c.lower(), p) for p in patterns))


def test_the_policy_is_a_valid_iam_document() -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    sids = [s.get("Sid") for s in policy["Statement"]]
    assert len(set(sids)) == len(sids), f"duplicate Sids: {sids}"
    for statement in policy["Statement"]:
        assert set(statement) <= STATEMENT_KEYS, (
            f"{statement.get('Sid')}: unknown keys {set(statement) - STATEMENT_KEYS}"
        )
        assert statement["Effect"] in ("Allow", "Deny")
        assert statement.get("Action") and statement.get("Resource"), statement.get("Sid")
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        for action in actions:
            service, _, name = action.partition(":")
            assert service and name and "*" not in service, f"{statement.get('Sid')}: malformed action {action!r}"
        assert "*" not in actions, "no statement may allow every action"


def test_the_coverage_check_finds_a_missing_action() -> None:
    policy = {"Statement": [{"Effect": "Allow", "Action": ["ec2:Describe*", "s3:GetObject"], "Resource": "*"}]}
    calls = {"ec2:DescribeImages": 3, "s3:GetObject": 1, "ec2:CopyImage": 1}
    assert not_covered(calls, policy) == ["ec2:CopyImage"]


def test_every_recorded_call_is_allowed(api_calls: ApiCallRecorder) -> None:
    assert api_calls is RECORDER
    require(
        "recorded AWS calls",
        bool(api_calls.calls),
        "run this file together with the other tests of tests/aws (it checks the calls they made)",
    )
    missing = not_covered(api_calls.calls, load_policy())
    assert not missing, (
        f"{len(missing)} AWS call(s) made by the code are not allowed by {POLICY.relative_to(ROOT)}: {missing}; "
        "add them to the statement for their purpose"
    )


# --- resources and conditions, not only action names --------------------------------------------
# A small model of IAM's evaluation for what this policy uses: Allow statements, wildcard actions and
# resources, and the StringEquals, StringLike and Null condition operators. A request is allowed when
# one statement matches its action and resource and all of that statement's conditions hold.
OPERATORS = {
    "StringEquals": lambda have, want: have is not None and have in want,
    "StringLike": lambda have, want: have is not None and any(fnmatchcase(have, w) for w in want),
    "Null": lambda have, want: (have is None) == (want[0].lower() == "true"),
}


def listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allows(policy: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    context = context or {}
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        if not any(fnmatchcase(action.lower(), a.lower()) for a in listed(statement["Action"])):
            continue
        if not any(fnmatchcase(resource, r) for r in listed(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        assert set(conditions) <= set(OPERATORS), f"{statement.get('Sid')}: the model lacks {set(conditions)}"
        if all(
            OPERATORS[operator](context.get(key), listed(want))
            for operator, keys in conditions.items()
            for key, want in keys.items()
        ):
            return True
    return False


INSTANCE = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0"
RUN_SHELL = "arn:aws:ssm:eu-west-1::document/AWS-RunShellScript"


def test_the_model_of_iam_evaluation_reads_resources_and_conditions() -> None:
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "ec2:Terminate*",
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {"StringLike": {"aws:ResourceTag/team": ["web-*"]}},
            }
        ]
    }
    assert allows(policy, "ec2:TerminateInstances", INSTANCE, {"aws:ResourceTag/team": "web-1"})
    assert not allows(policy, "ec2:TerminateInstances", INSTANCE, {"aws:ResourceTag/team": "db"})
    assert not allows(policy, "ec2:TerminateInstances", INSTANCE)
    assert not allows(policy, "ec2:TerminateInstances", "arn:aws:ec2:eu-west-1:1:volume/vol-1")
    assert not allows(policy, "ec2:StopInstances", INSTANCE, {"aws:ResourceTag/team": "web-1"})


def test_commands_run_only_on_instances_the_pipeline_launched() -> None:
    """SendCommand names the document and the instance: both must be allowed, and an instance only
    when it carries `immutable:role` (builders, bakes, base tests, dev and staging)."""
    policy = load_policy()
    ours = {"aws:ResourceTag/immutable:role": "builder"}
    assert allows(policy, "ssm:SendCommand", RUN_SHELL)
    assert allows(policy, "ssm:SendCommand", INSTANCE, ours)
    assert not allows(policy, "ssm:SendCommand", INSTANCE), "a command on any instance of the account"
    assert not allows(policy, "ssm:SendCommand", "arn:aws:ssm:eu-west-1::document/AWS-ConfigureAWSPackage")
    assert allows(policy, "ec2:TerminateInstances", INSTANCE, ours)
    assert not allows(policy, "ec2:TerminateInstances", INSTANCE)


def test_only_the_pipelines_own_roles_can_be_passed_and_only_to_ec2() -> None:
    policy = load_policy()
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert allows(policy, "iam:PassRole", "arn:aws:iam::123456789012:role/immutable-builder", to_ec2)
    assert not allows(policy, "iam:PassRole", "arn:aws:iam::123456789012:role/OrganizationAccountAccessRole", to_ec2)
    assert not allows(
        policy,
        "iam:PassRole",
        "arn:aws:iam::123456789012:role/immutable-builder",
        {"iam:PassedToService": "lambda.amazonaws.com"},
    )


IMAGE = "arn:aws:ec2:eu-west-1::image/ami-0123456789abcdef0"


def test_tags_are_set_only_as_resources_are_made_or_on_our_own_images() -> None:
    """CreateTags is allowed inside the calls that make a resource (tag-on-create: instances, AMIs,
    copies, launch templates), and afterwards only on an AMI of ours (signature and channel tags);
    never on anything else of the account."""
    policy = load_policy()
    for action in ("RunInstances", "CreateImage", "CopyImage"):
        assert allows(policy, "ec2:CreateTags", IMAGE, {"ec2:CreateAction": action}), action
    ours = {"aws:ResourceTag/immutable:repository": "apps/sample"}
    assert allows(policy, "ec2:CreateTags", IMAGE, ours)
    assert allows(policy, "ec2:DeleteTags", IMAGE, ours)
    assert not allows(policy, "ec2:CreateTags", IMAGE), "tags on an AMI that is not ours"
    assert not allows(policy, "ec2:DeleteTags", IMAGE), "tags removed from an AMI that is not ours"
    assert not allows(policy, "ec2:CreateTags", INSTANCE, ours), "tags on an existing instance"
    assert not allows(policy, "ec2:CreateTags", IMAGE, {"ec2:CreateAction": "CreateVolume"})
