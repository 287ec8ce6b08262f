"""A thin HTTP layer in front of the moto server that answers as AWS does where moto is more forgiving.

Run as `python -m tests.aws.realism --upstream http://127.0.0.1:5890 --port 5891`; the aws tests
point every client at it (tests/aws/conftest.py, `aws_endpoint`). Every request goes on to moto;
these answers are changed on the way, each as the AWS documentation describes it:

- **Target groups outside a listener report `unused`.** An ALB health-checks only target groups
  that a listener's default action or one of its rules forwards to (at any weight); the targets of
  any other group are `unused` (`Target.NotInUse`). moto reports them `healthy`.
- **A target just registered is `initial`.** A load balancer calls a new target healthy only once it
  has passed the group's health checks (HealthyThresholdCount in a row): until then it is `initial`
  (`Elb.InitialHealthChecking`). moto reports it `healthy` at once.
- **A new instance's status checks are `initializing` while it boots** (two to four minutes on
  AWS). moto reports them `ok` at once.
- **A new AMI is not found for a moment, then pending.** Right after CreateImage or CopyImage,
  DescribeImages by id answers `InvalidAMIID.NotFound` (eventual consistency), then `pending`.
  moto makes it `available` at once.
- **A snapshot is in use right after its AMI is deregistered.** DeleteSnapshot answers
  `InvalidSnapshot.InUse` for a while after DeregisterImage, while AWS releases it.
  `DeregisterImage(DeleteAssociatedSnapshots=true)` deletes them (moto ignores the flag).
- **SSM reaches only an instance whose agent has registered.** An instance runs the SSM agent
  when its AMI has one (an image inherits it from the instance it was made of, a copy from its
  source) or its user data installs it; the agent registers a few seconds after launch, and only
  with an instance profile. Before that SendCommand answers `InvalidInstanceId`, and
  DescribeInstanceInformation does not list the instance (then lists it `Online`). moto accepts
  any command at once.
- **A group whose instances cannot launch is created anyway.** CreateAutoScalingGroup checks the
  request, not the launch: when the instances fail to launch (a security group or AMI that is
  gone, a KMS key the service role may not use), the group exists without instances and
  DescribeScalingActivities says why (`Failed`). moto refuses the CreateAutoScalingGroup itself.
- **CloudWatch keeps every point for percentiles.** A percentile statistic (`p90`) of a metric put
  as values and counts (a distribution, as an ALB reports response times) is the nearest-rank
  value of the period's points. moto fails on any percentile; this layer answers GetMetricData
  itself when a query asks for one, from the points it saw go to moto.
- **CopyImage honours its client token and tags.** The same ClientToken returns the same copy
  (even one deregistered since); with other parameters it is `IdempotentParameterMismatch`.
  TagSpecifications tag the copy when it is created. moto ignores both.

Each window is a few seconds (flags below): long enough that code which does not wait for it
fails, short enough for the suite.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import boto3
import botocore.session
import httpx
from botocore.parsers import RpcV2CBORParser
from botocore.serialize import create_serializer

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"  # what this layer's own answers declare
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")  # CloudWatch's pNN statistics
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}


@dataclass(frozen=True)
class Windows:
    """Seconds each AWS behaviour lasts (see the module doc)."""

    image_not_found_s: float = 2.0
    image_pending_s: float = 3.0
    snapshot_in_use_s: float = 3.0
    agent_registers_s: float = 3.0
    target_initial_s: float = 3.0
    status_checks_s: float = 3.0


@dataclass
class AwsBehaviour:
    """What the layer remembers between requests; one lock guards it."""

    upstream: str
    windows: Windows
    lock: threading.Lock = field(default_factory=threading.Lock)
    images_created: dict[str, float] = field(default_factory=dict)  # image id -> monotonic time created
    snapshots_released: dict[str, tuple[str, float]] = field(default_factory=dict)  # snapshot -> (ami, until)
    images_with_agent: set[str] = field(default_factory=set)
    failed_launches: dict[str, tuple[str, str]] = field(default_factory=dict)  # group -> (message, when)
    instances: dict[str, tuple[bool, float]] = field(default_factory=dict)  # id -> (agent can register, launched)
    # (target group, target id) -> monotonic time the layer first saw it registered
    targets_registered: dict[tuple[str, str], float] = field(default_factory=dict)
    # (region, client token) -> (the call's other parameters, the copy's AMI id)
    copy_tokens: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    # (region, namespace, metric, dimensions) -> every point put: (epoch seconds, values, counts)
    metric_points: dict[
        tuple[str, str, str, tuple[tuple[str, str], ...]], list[tuple[float, list[float], list[float]]]
    ] = field(default_factory=dict)
    # region -> the target groups its listeners forward to; dropped whenever a load balancer changes,
    # so target-health polls (every second or two from every waiting fleet) do not each walk them all
    forwarded_to: dict[str, set[str]] = field(default_factory=dict)
    load_balancer_changes: int = 0

    def post(self, call: Call, params: dict[str, str]) -> Answer:
        """Send a Query-protocol call with these parameters to moto (which routes by the signed scope)."""
        scope = f"testing/20260101/{call.region}/{call.service}/aws4_request"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0",
        }
        reply = httpx.post(self.upstream, content=urlencode(params).encode(), headers=headers, timeout=60.0)
        return Answer(reply.status_code, dict(reply.headers), reply.content)

    def client(self, service: str, region: str) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.upstream,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@dataclass(frozen=True)
class Call:
    """One call of the Query protocol (EC2, ELBv2: flat string parameters) or of the JSON protocol
    (SSM: the request's JSON object): its service, region, action and parameters."""

    service: str
    region: str
    action: str
    params: dict[str, Any]
    protocol: str = "query"  # or "json", "cbor": an answer this layer makes is in the call's protocol


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_call(headers: Any, body: bytes, path: str = "/") -> Call | None:
    scope = CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
    if scope is None:
        return None
    region, service = scope.group(1), scope.group(2)
    if target := headers.get("X-Amz-Target"):
        return Call(service, region, target.rsplit(".", 1)[-1], json.loads(body or b"{}"), "json")
    if headers.get("Content-Type", "").startswith("application/cbor") and "/operation/" in path:
        # Smithy RPC v2 CBOR (CloudWatch): /service/<service>/operation/<operation>
        return Call(service, region, path.rsplit("/operation/", 1)[1], cbor_decode(body) if body else {}, "cbor")
    if not headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        return None
    params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    if "Action" not in params:
        return None
    return Call(service, region, params["Action"], params)


def cbor_decode(body: bytes) -> Any:
    parser = RpcV2CBORParser()
    return parser.parse_data_item(parser.get_peekable_stream_from_bytes(body))


CLOUDWATCH = botocore.session.get_session().get_service_model("cloudwatch")


def cloudwatch_answer(call: Call, value: dict[str, Any]) -> Answer:
    """`value` as CloudWatch's answer to the call, in the call's protocol (botocore picks CBOR or JSON)."""
    if call.protocol == "json":

        def plain(item: Any) -> Any:
            return item.timestamp() if isinstance(item, datetime) else item

        body = json.dumps(value, default=plain).encode()
        return Answer(200, {"Content-Type": "application/x-amz-json-1.0"}, body)
    serializer: Any = create_serializer("smithy-rpc-v2-cbor", include_validation=False)
    cbor = bytearray()
    serializer._serialize_data_item(cbor, value, CLOUDWATCH.operation_model(call.action).output_shape)
    return Answer(200, {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}, bytes(cbor))


def statistic(points: list[tuple[float, float]], stat: str) -> float:
    """One CloudWatch statistic of (value, count) points; a percentile is the nearest-rank value."""
    total = sum(count for _, count in points)
    if found := PERCENTILE.fullmatch(stat):
        rank, seen = math.ceil(float(found.group(1)) / 100 * total), 0.0
        for value, count in sorted(points):
            seen += count
            if seen >= rank:
                return value
        return max(value for value, _ in points)
    if stat == "Sum":
        return sum(value * count for value, count in points)
    if stat == "Average":
        return sum(value * count for value, count in points) / total
    if stat == "SampleCount":
        return total
    if stat in ("Minimum", "Maximum"):
        return (min if stat == "Minimum" else max)(value for value, _ in points)
    raise ValueError(f"statistic {stat!r} is not modelled by the realism layer")


def _epoch(moment: Any) -> float:
    return moment.timestamp() if isinstance(moment, datetime) else float(moment)


def json_error(code: str, message: str) -> Answer:
    body = json.dumps({"__type": code, "message": message}).encode()
    return Answer(400, {"Content-Type": "application/x-amz-json-1.1"}, body)


def ec2_error(code: str, message: str) -> Answer:
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
        f"<Message>{message}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    )
    return Answer(400, {"Content-Type": "text/xml"}, body.encode())


def numbered(params: dict[str, str], prefix: str) -> list[str]:
    """Values of a Query-protocol list (`ImageId.1`, `ImageId.2`, ...)."""
    return [v for k, v in sorted(params.items()) if re.fullmatch(rf"{re.escape(prefix)}\.\d+", k)]


def tag_specifications(params: dict[str, str]) -> dict[str, str]:
    """Tags of `TagSpecification.N.Tag.M.Key/Value` for images (ResourceType image or none)."""
    tags: dict[str, str] = {}
    for key, value in params.items():
        found = re.fullmatch(r"TagSpecification\.(\d+)\.Tag\.(\d+)\.Key", key)
        if found and params.get(f"TagSpecification.{found.group(1)}.ResourceType", "image") == "image":
            tags[value] = params.get(f"TagSpecification.{found.group(1)}.Tag.{found.group(2)}.Value", "")
    return tags


def rewrite_xml(body: bytes, change: Any) -> bytes:
    """Parse an XML answer, let `change(root, tag)` edit it (`tag(name)` is the name in the answer's
    namespace, whichever moto declared), and serialize it again in that namespace."""
    root = ET.fromstring(body)
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    ET.register_namespace("", namespace)
    change(root, lambda name: f"{{{namespace}}}{name}" if namespace else name)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def find_text(body: bytes, name: str) -> str:
    """The text of the first element called `name` in an XML answer, whatever its namespace."""
    for element in ET.fromstring(body).iter():
        if element.tag.rsplit("}", 1)[-1] == name:
            return element.text or ""
    return ""


class Realism:
    """The AWS behaviours above: `before` may answer instead of moto, `after` may change moto's answer."""

    def __init__(self, behaviour: AwsBehaviour) -> None:
        self.state = behaviour

    # ---- EC2 images and snapshots ------------------------------------------------------------------

    def before(self, call: Call) -> Answer | None:
        handler = getattr(self, f"before_{call.service}_{call.action}", None)
        return handler(call) if handler else None

    def after(self, call: Call, answer: Answer) -> Answer:
        if call.service == "elasticloadbalancing" and not call.action.startswith("Describe"):
            with self.state.lock:
                self.state.forwarded_to.clear()
                self.state.load_balancer_changes += 1
        handler = getattr(self, f"after_{call.service}_{call.action}", None)
        return handler(call, answer) if handler and answer.status == 200 else answer

    def _age(self, image_id: str) -> float | None:
        with self.state.lock:
            created = self.state.images_created.get(image_id)
        return None if created is None else time.monotonic() - created

    def before_ec2_DescribeImages(self, call: Call) -> Answer | None:
        for image_id in numbered(call.params, "ImageId"):
            age = self._age(image_id)
            if age is not None and age < self.state.windows.image_not_found_s:
                return ec2_error("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
        return None

    def after_ec2_DescribeImages(self, call: Call, answer: Answer) -> Answer:
        # Every young image in the answer is pending, however it was asked for (by id, by filter or by owner).
        pending_until = self.state.windows.image_not_found_s + self.state.windows.image_pending_s

        def young(image_id: str | None) -> bool:
            age = None if image_id is None else self._age(image_id)
            return age is not None and age < pending_until

        with self.state.lock:
            now = time.monotonic()
            if not any(now - created < pending_until for created in self.state.images_created.values()):
                return answer  # nothing young: spare parsing a long answer

        def to_pending(root: ET.Element, tag: Any) -> None:
            for item in root.iter(tag("item")):
                image_id, state = item.find(tag("imageId")), item.find(tag("imageState"))
                if image_id is not None and state is not None and young(image_id.text):
                    state.text = "pending"

        return Answer(answer.status, answer.headers, rewrite_xml(answer.body, to_pending))

    def after_ec2_CreateImage(self, call: Call, answer: Answer) -> Answer:
        image_id = self._created(answer)
        with self.state.lock:
            if self.state.instances.get(call.params.get("InstanceId", ""), (False, 0.0))[0]:
                self.state.images_with_agent.add(image_id)
        return answer

    def _created(self, answer: Answer) -> str:
        image_id = find_text(answer.body, "imageId")
        with self.state.lock:
            self.state.images_created[image_id] = time.monotonic()
        return image_id

    def before_ec2_CopyImage(self, call: Call) -> Answer | None:
        token = call.params.get("ClientToken")
        if not token:
            return None
        with self.state.lock:
            earlier = self.state.copy_tokens.get((call.region, token))
        if earlier is None:
            return None
        params, image_id = earlier
        if params != _copy_params(call):
            return ec2_error("IdempotentParameterMismatch", f"client token {token} was used with other parameters")
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><CopyImageResponse xmlns=\"{EC2_NS}\">"
            f"<requestId>{uuid.uuid4()}</requestId><imageId>{image_id}</imageId></CopyImageResponse>"
        )
        return Answer(200, {"Content-Type": "text/xml"}, body.encode())

    def after_ec2_CopyImage(self, call: Call, answer: Answer) -> Answer:
        image_id = self._created(answer)
        with self.state.lock:
            if call.params.get("SourceImageId") in self.state.images_with_agent:
                self.state.images_with_agent.add(image_id)
        if token := call.params.get("ClientToken"):
            with self.state.lock:
                self.state.copy_tokens[call.region, token] = (_copy_params(call), image_id)
        if tags := tag_specifications(call.params):
            self.state.client("ec2", call.region).create_tags(
                Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )
        return answer

    def before_ec2_DeregisterImage(self, call: Call) -> Answer | None:
        ec2 = self.state.client("ec2", call.region)
        image_id = call.params.get("ImageId", "")
        try:
            images = ec2.describe_images(ImageIds=[image_id])["Images"]
        except Exception:
            return None  # moto answers the error itself
        snapshots = [
            m["Ebs"]["SnapshotId"]
            for i in images
            for m in i.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")
        ]
        ec2.deregister_image(ImageId=image_id)
        until = time.monotonic() + self.state.windows.snapshot_in_use_s
        with self.state.lock:
            for snapshot in snapshots:
                self.state.snapshots_released[snapshot] = (image_id, until)
        if call.params.get("DeleteAssociatedSnapshots", "").lower() == "true":
            for snapshot in snapshots:  # AWS deletes them once the AMI lets go; nobody else may meanwhile
                ec2.delete_snapshot(SnapshotId=snapshot)
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><DeregisterImageResponse xmlns=\"{EC2_NS}\">"
            f"<requestId>{uuid.uuid4()}</requestId><return>true</return></DeregisterImageResponse>"
        )
        return Answer(200, {"Content-Type": "text/xml"}, body.encode())

    def before_ec2_DeleteSnapshot(self, call: Call) -> Answer | None:
        snapshot = call.params.get("SnapshotId", "")
        with self.state.lock:
            image_id, until = self.state.snapshots_released.get(snapshot, ("", 0.0))
        if time.monotonic() < until:
            return ec2_error("InvalidSnapshot.InUse", f"The snapshot {snapshot} is currently in use by {image_id}")
        return None

    # ---- EC2 instances and the SSM agent --------------------------------------------------------

    def after_ec2_RunInstances(self, call: Call, answer: Answer) -> Answer:
        user_data = base64.b64decode(call.params.get("UserData", "")).decode(errors="replace")
        with self.state.lock:
            has_agent = call.params.get("ImageId") in self.state.images_with_agent or "amazon-ssm-agent" in user_data
        profile = bool(call.params.get("IamInstanceProfile.Name") or call.params.get("IamInstanceProfile.Arn"))
        root = ET.fromstring(answer.body)
        launched = {e.text for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "instanceId" and e.text}
        with self.state.lock:
            for instance_id in launched:
                self.state.instances[instance_id] = (has_agent and profile, time.monotonic())
        return answer

    def after_ec2_DescribeInstanceStatus(self, call: Call, answer: Answer) -> Answer:
        """A new instance's status checks are `initializing` until it has booted."""
        if answer.status != 200:
            return answer
        now = time.monotonic()

        def initializing(root: ET.Element, tag: Any) -> None:
            for item in root.iter(tag("item")):
                instance_id = item.findtext(tag("instanceId"))
                if not instance_id:
                    continue
                with self.state.lock:
                    _, launched = self.state.instances.get(instance_id, (False, 0.0))
                if now - launched >= self.state.windows.status_checks_s:
                    continue
                for kind in ("instanceStatus", "systemStatus"):
                    summary = item.find(tag(kind))
                    status = summary.find(tag("status")) if summary is not None else None
                    if status is not None:
                        status.text = "initializing"

        return Answer(answer.status, answer.headers, rewrite_xml(answer.body, initializing))

    def _registered(self, instance_id: str) -> bool:
        with self.state.lock:
            can_register, launched = self.state.instances.get(instance_id, (False, 0.0))
        return can_register and time.monotonic() - launched >= self.state.windows.agent_registers_s

    def before_ssm_SendCommand(self, call: Call) -> Answer | None:
        missing = [i for i in call.params.get("InstanceIds", []) if not self._registered(i)]
        if missing:
            return json_error("InvalidInstanceId", f"Instances {missing} not in a valid state for account 123456789012")
        return None

    def before_ssm_DescribeInstanceInformation(self, call: Call) -> Answer | None:
        wanted: set[str] | None = None
        for found in call.params.get("Filters", []):
            if found.get("Key") == "InstanceIds":
                wanted = set(found.get("Values", []))
        with self.state.lock:
            known = list(self.state.instances)
        listed = [
            {
                "InstanceId": instance_id,
                "PingStatus": "Online",
                "LastPingDateTime": time.time(),
                "AgentVersion": "3.3.0.0",
                "PlatformType": "Linux",
                "ResourceType": "EC2Instance",
            }
            for instance_id in known
            if (wanted is None or instance_id in wanted) and self._registered(instance_id)
        ]
        body = json.dumps({"InstanceInformationList": listed}).encode()
        return Answer(200, {"Content-Type": "application/x-amz-json-1.1"}, body)

    # ---- Auto Scaling launches ----------------------------------------------------------------------

    def before_autoscaling_CreateAutoScalingGroup(self, call: Call) -> Answer | None:
        answer = self.state.post(call, call.params)
        if answer.status == 200 or find_text(answer.body, "Code") not in ASYNC_LAUNCH_ERRORS:
            return answer
        message = find_text(answer.body, "Message")
        empty = self.state.post(call, call.params | {"MinSize": "0", "DesiredCapacity": "0"})
        if empty.status != 200:
            return answer
        with self.state.lock:
            self.state.failed_launches[call.params["AutoScalingGroupName"]] = (message, _now_iso())
        return empty

    def after_autoscaling_DescribeScalingActivities(self, call: Call, answer: Answer) -> Answer:
        group = call.params.get("AutoScalingGroupName", "")
        with self.state.lock:
            failed = self.state.failed_launches.get(group)
        if failed is None:
            return answer
        message, when = failed

        def add_failed(root: ET.Element, tag: Any) -> None:
            activities = next(root.iter(tag("Activities")))
            member = ET.Element(tag("member"))
            for name, text in (
                ("ActivityId", str(uuid.uuid5(uuid.NAMESPACE_URL, group))),
                ("AutoScalingGroupName", group),
                (
                    "Description",
                    f"Launching a new EC2 instance.  Status Reason: {message}. Launching EC2 instance failed.",
                ),
                (
                    "Cause",
                    f"At {when} an instance was started in response to a difference between desired and "
                    "actual capacity",
                ),
                ("StartTime", when),
                ("EndTime", when),
                ("StatusCode", "Failed"),
                ("StatusMessage", f"{message}. Launching EC2 instance failed."),
                ("Progress", "100"),
            ):
                ET.SubElement(member, tag(name)).text = text
            activities.insert(0, member)

        return Answer(answer.status, answer.headers, rewrite_xml(answer.body, add_failed))

    def after_autoscaling_DeleteAutoScalingGroup(self, call: Call, answer: Answer) -> Answer:
        with self.state.lock:
            self.state.failed_launches.pop(call.params.get("AutoScalingGroupName", ""), None)
        return answer

    # ---- ELBv2 target health -----------------------------------------------------------------------

    def after_elasticloadbalancing_DescribeTargetHealth(self, call: Call, answer: Answer) -> Answer:
        target_group = call.params.get("TargetGroupArn", "")
        if target_group in self._forwarded_to(call.region):
            return self._initial_while_young(target_group, answer)

        def to_unused(root: ET.Element, tag: Any) -> None:
            for health in root.iter(tag("TargetHealth")):
                for old in list(health):
                    health.remove(old)
                for name, text in (
                    ("State", "unused"),
                    ("Reason", "Target.NotInUse"),
                    ("Description", "Target group is not configured to receive traffic from the load balancer"),
                ):
                    ET.SubElement(health, tag(name)).text = text

        return Answer(answer.status, answer.headers, rewrite_xml(answer.body, to_unused))

    def _initial_while_young(self, target_group: str, answer: Answer) -> Answer:
        """A target just registered is `initial` until it has passed the group's health checks."""
        if answer.status != 200:
            return answer
        now = time.monotonic()

        def to_initial(root: ET.Element, tag: Any) -> None:
            for described in root.iter(tag("member")):
                target, health = described.find(tag("Target")), described.find(tag("TargetHealth"))
                if target is None or health is None:
                    continue
                target_id = target.findtext(tag("Id")) or ""
                with self.state.lock:
                    seen = self.state.targets_registered.setdefault((target_group, target_id), now)
                state = health.find(tag("State"))
                if now - seen >= self.state.windows.target_initial_s or state is None or state.text != "healthy":
                    continue
                for old in list(health):
                    health.remove(old)
                for name, text in (
                    ("State", "initial"),
                    ("Reason", "Elb.InitialHealthChecking"),
                    ("Description", "Initial health checks in progress"),
                ):
                    ET.SubElement(health, tag(name)).text = text

        return Answer(answer.status, answer.headers, rewrite_xml(answer.body, to_initial))

    def _forwarded_to(self, region: str) -> set[str]:
        """Target groups some listener of the region forwards to (default action or rule, any weight)."""
        with self.state.lock:
            known, changes = self.state.forwarded_to.get(region), self.state.load_balancer_changes
        if known is not None:
            return known
        elb = self.state.client("elbv2", region)
        found: set[str] = set()
        for balancer in elb.describe_load_balancers()["LoadBalancers"]:
            for listener in elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]:
                actions = list(listener.get("DefaultActions", []))
                for rule in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]:
                    actions += rule.get("Actions", [])
                for action in actions:
                    if action.get("Type") != "forward":
                        continue
                    if action.get("TargetGroupArn"):
                        found.add(action["TargetGroupArn"])
                    groups = (action.get("ForwardConfig") or {}).get("TargetGroups", [])
                    found |= {g["TargetGroupArn"] for g in groups}
        with self.state.lock:
            if self.state.load_balancer_changes == changes:  # nothing changed while we looked
                self.state.forwarded_to[region] = found
        return found

    # ---- CloudWatch percentiles ----------------------------------------------------------------------

    def before_monitoring_PutMetricData(self, call: Call) -> Answer | None:
        namespace = call.params["Namespace"]
        with self.state.lock:
            for item in call.params.get("MetricData", []):
                dimensions = tuple(sorted((d["Name"], d["Value"]) for d in item.get("Dimensions", [])))
                values = item.get("Values") or [item["Value"]]
                counts = item.get("Counts") or [1.0] * len(values)
                moment = _epoch(item["Timestamp"]) if "Timestamp" in item else time.time()
                key = (call.region, namespace, item["MetricName"], dimensions)
                self.state.metric_points.setdefault(key, []).append((moment, list(values), list(counts)))
        return None  # moto stores them too, for every other statistic

    def before_monitoring_GetMetricData(self, call: Call) -> Answer | None:
        queries = call.params["MetricDataQueries"]
        if not any(PERCENTILE.fullmatch(q.get("MetricStat", {}).get("Stat", "")) for q in queries):
            return None
        start, end = _epoch(call.params["StartTime"]), _epoch(call.params["EndTime"])
        ascending = call.params.get("ScanBy") == "TimestampAscending"
        results = [self._metric_result(call.region, query, start, end, ascending) for query in queries]
        return cloudwatch_answer(call, {"MetricDataResults": results, "Messages": []})

    def _metric_result(
        self, region: str, query: dict[str, Any], start: float, end: float, ascending: bool
    ) -> dict[str, Any]:
        stat, metric = query["MetricStat"], query["MetricStat"]["Metric"]
        period = int(stat["Period"])
        dimensions = tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
        with self.state.lock:
            points = list(
                self.state.metric_points.get((region, metric["Namespace"], metric["MetricName"], dimensions), [])
            )
        periods: dict[int, list[tuple[float, float]]] = {}
        for moment, values, counts in points:
            if start <= moment < end:
                periods.setdefault(int(moment // period * period), []).extend(zip(values, counts, strict=True))
        stamps = sorted(periods, reverse=not ascending)
        return {
            "Id": query["Id"],
            "Label": f"{metric['MetricName']} {stat['Stat']}",
            "Timestamps": [datetime.fromtimestamp(stamp, UTC) for stamp in stamps],
            "Values": [statistic(periods[stamp], stat["Stat"]) for stamp in stamps],
            "StatusCode": "Complete",
        }


# What moto answers a CreateAutoScalingGroup whose instances cannot launch; AWS creates the group
# and fails each launch (a scaling activity) instead.
ASYNC_LAUNCH_ERRORS = (
    "InvalidGroup.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Malformed",
    "InvalidSubnetID.NotFound",
)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _copy_params(call: Call) -> str:
    """What must match for a repeated client token (everything but the token itself)."""
    kept = sorted((k, v) for k, v in call.params.items() if k != "ClientToken")
    return hashlib.sha256(repr(kept).encode()).hexdigest()


def serve(upstream: str, port: int, windows: Windows) -> None:
    realism = Realism(AwsBehaviour(upstream=upstream, windows=windows))
    forward = httpx.Client(base_url=upstream, timeout=120.0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:  # moto's own log records every call
            return

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body()
            try:
                answer = self._answer(body)
            except Exception as exc:  # a fault of this layer: said as such, not as a dropped connection
                traceback.print_exc()
                answer = Answer(500, {"Content-Type": "text/plain"}, f"realism layer: {exc!r}".encode())
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        def _answer(self, body: bytes) -> Answer:
            call = parse_call(self.headers, body, self.path)
            answer = realism.before(call) if call else None
            if answer is None:
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")
                }
                headers["Content-Length"] = str(len(body))
                reply = forward.request(self.command, self.path, headers=headers, content=body)
                answer = Answer(reply.status_code, dict(reply.headers), reply.content)
                if call:
                    answer = realism.after(call, answer)
            return answer

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the moto server's URL")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(args.upstream, args.port, Windows())


if __name__ == "__main__":
    main()
