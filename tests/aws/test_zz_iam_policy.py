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
