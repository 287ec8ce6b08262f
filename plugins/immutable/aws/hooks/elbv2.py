"""Application Load Balancer target groups and the weighted forward of a listener."""

from __future__ import annotations

import time
import uuid
from typing import Any

from immutable.aws.hooks import RegionalAwsHook

# An ALB health-checks only the target groups a listener forwards to: any other reports its targets
# `unused`, so a fleet that takes no traffic yet (a new color, the kept color after a flip) would
# never turn healthy. One rule per listener, last in order and matching only a header with a secret
# value nobody sends, forwards to every such group to keep it health-checked.
STANDBY_RULE_PRIORITY = 50000  # the highest priority number an ALB rule may have: it is evaluated last
STANDBY_HEADER = "X-Immutable-Standby"
HEALTH_POLL_S = 5.0  # seconds between target health reads


class ElbV2Hook(RegionalAwsHook):
    client_type = "elbv2"

    def target_group(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.conn.describe_target_groups(Names=[name])["TargetGroups"]
        except self.conn.exceptions.TargetGroupNotFoundException:
            return None
        return found[0] if found else None

    def ensure_target_group(
        self, *, name: str, vpc_id: str, port: int, health_path: str, tags: dict[str, str]
    ) -> dict[str, Any]:
        """The target group `name`, created when missing (the same name twice is a no-op on AWS too)."""
        found = self.target_group(name)
        if found:
            return found
        created = self.conn.create_target_group(
            Name=name,
            Protocol="HTTP",
            Port=port,
            VpcId=vpc_id,
            TargetType="instance",
            HealthCheckPath=health_path,
            HealthCheckIntervalSeconds=10,
            HealthyThresholdCount=2,
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )
        return dict(created["TargetGroups"][0])

    def delete_target_group(self, name: str) -> bool:
        found = self.target_group(name)
        if not found:
            return False
        self.conn.delete_target_group(TargetGroupArn=found["TargetGroupArn"])
        return True

    def target_health(self, target_group_arn: str) -> dict[str, dict[str, Any]]:
        """Instance id -> TargetHealth of every target registered in the group."""
        described = self.conn.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
        return {d["Target"]["Id"]: d["TargetHealth"] for d in described}

    def wait_targets_healthy(self, target_group_arn: str, instance_ids: list[str], timeout_s: float) -> None:
        """Until every target is healthy; at once an error when the group is not health-checked at all."""
        deadline = time.monotonic() + timeout_s
        while True:
            health = {
                d["Target"]["Id"]: d["TargetHealth"]
                for d in self.conn.describe_target_health(
                    TargetGroupArn=target_group_arn, Targets=[{"Id": i} for i in instance_ids]
                )["TargetHealthDescriptions"]
            }
            if all(health.get(i, {}).get("State") == "healthy" for i in instance_ids):
                return
            not_checked = sorted(i for i, h in health.items() if h.get("Reason") == "Target.NotInUse")
            if not_checked:
                raise RuntimeError(
                    f"target group {target_group_arn}: {not_checked} are 'unused': no listener forwards to the "
                    "group, so the load balancer does not health-check it"
                )
            if time.monotonic() > deadline:
                states = {i: f"{h.get('State')} ({h.get('Reason', '')})" for i, h in health.items()}
                raise TimeoutError(f"target group {target_group_arn}: not all healthy after {timeout_s:.0f}s: {states}")
            time.sleep(HEALTH_POLL_S)

    def keep_health_checked(self, listener_arn: str, target_group_arns: list[str]) -> None:
        """Make the listener's standby rule forward to exactly these groups (none: the rule goes)."""
        rule = self._standby_rule(listener_arn)
        if not target_group_arns:
            if rule is not None:
                self.conn.delete_rule(RuleArn=rule["RuleArn"])
            return
        actions = [
            {
                "Type": "forward",
                "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": arn, "Weight": 1} for arn in target_group_arns]},
            }
        ]
        if rule is not None:
            self.conn.modify_rule(RuleArn=rule["RuleArn"], Actions=actions)
            return
        secret = uuid.uuid4().hex  # never sent by anyone: the rule matches no request
        self.conn.create_rule(
            ListenerArn=listener_arn,
            Priority=STANDBY_RULE_PRIORITY,
            Conditions=[
                {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": STANDBY_HEADER, "Values": [secret]}}
            ],
            Actions=actions,
        )

    def _standby_rule(self, listener_arn: str) -> dict[str, Any] | None:
        rules = self.conn.describe_rules(ListenerArn=listener_arn)["Rules"]
        found = [r for r in rules if r.get("Priority") == str(STANDBY_RULE_PRIORITY)]
        return found[0] if found else None

    def listener(self, listener_arn: str) -> dict[str, Any]:
        return dict(self.conn.describe_listeners(ListenerArns=[listener_arn])["Listeners"][0])

    def listener_url(self, listener_arn: str) -> str:
        """Where users reach the listener: its load balancer's DNS name, port and protocol."""
        listener = self.listener(listener_arn)
        balancer = self.conn.describe_load_balancers(LoadBalancerArns=[listener["LoadBalancerArn"]])["LoadBalancers"][0]
        return f"{str(listener.get('Protocol', 'HTTP')).lower()}://{balancer['DNSName']}:{listener['Port']}/"

    def forward_weights(self, listener_arn: str) -> dict[str, int]:
        """Target group ARN → weight of the listener's default forward (empty when it forwards nowhere)."""
        weights: dict[str, int] = {}
        for action in self.listener(listener_arn).get("DefaultActions", []):
            if action["Type"] != "forward":
                continue
            groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
            if groups:
                weights |= {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
            elif action.get("TargetGroupArn"):
                weights[action["TargetGroupArn"]] = 1
        return weights

    def set_forward_weights(self, listener_arn: str, weights: dict[str, int], fallback: dict[str, Any]) -> None:
        """One atomic listener change: forward by `weights`, or `fallback` when nothing takes traffic."""
        live = {arn: weight for arn, weight in weights.items() if weight > 0}
        if not live:
            actions = [fallback]
        else:
            actions = [
                {
                    "Type": "forward",
                    "ForwardConfig": {
                        "TargetGroups": [{"TargetGroupArn": arn, "Weight": weight} for arn, weight in weights.items()]
                    },
                }
            ]
        self.conn.modify_listener(ListenerArn=listener_arn, DefaultActions=actions)

    def dimensions_of(self, target_group: dict[str, Any], load_balancer_arn: str) -> dict[str, str]:
        """CloudWatch's TargetGroup and LoadBalancer dimension values for a target group behind a balancer."""
        return {
            "target_group": target_group["TargetGroupArn"].split(":", 5)[-1],  # targetgroup/<name>/<id>
            "load_balancer": load_balancer_arn.split(":loadbalancer/", 1)[-1],  # app/<name>/<id>
        }
