"""Application Load Balancer target groups and the weighted forward of a listener."""

from __future__ import annotations

from typing import Any

from immutable.aws.hooks import RegionalAwsHook


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

    def wait_targets_healthy(self, target_group_arn: str, instance_ids: list[str], timeout_s: float) -> None:
        self.get_waiter("target_in_service").wait(
            TargetGroupArn=target_group_arn,
            Targets=[{"Id": i} for i in instance_ids],
            WaiterConfig={"Delay": 5, "MaxAttempts": max(1, int(timeout_s // 5))},
        )

    def listener(self, listener_arn: str) -> dict[str, Any]:
        return dict(self.conn.describe_listeners(ListenerArns=[listener_arn])["Listeners"][0])

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
