"""Pydantic models for every YAML file and every trigger form: the one place that validates.

Errors name the file, the field and the allowed values, so they can be shown as they are in the
Airflow UI (an import error or a failed validate task).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from immutable.bounded_yaml import YamlRefused, bounded
from immutable.paths import BASE_SPEC_FILE, PLATFORM_FILE, PROJECT_ROOT
from immutable.yaml_once import load_yaml_once

CVE_PATTERN = r"^CVE-\d{4}-\d{4,}$"
PACKAGE_NAME = r"^[a-z0-9][a-z0-9+.-]+$"
REASONS = ("weekly", "security", "manual")

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file or trigger value is invalid; the message says where and why."""


MAX_STRING_CHARS = 4096  # any string in any config file or form; fields that reach a command are tighter


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, str_max_length=MAX_STRING_CHARS)


def _no_parent_dirs(path: str) -> str:
    if ".." in path.split("/"):
        raise ValueError(f"'{path[:80]}' has a '..' component; give the path without it")
    return path


# A path on a host or in an image: no whitespace, quotes, shell or glob metacharacters, no `..`.
SafePath = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9._/+-]+$", max_length=255), AfterValidator(_no_parent_dirs)
]
SafeAbsolutePath = Annotated[
    str, StringConstraints(pattern=r"^/[A-Za-z0-9._/+-]+$", max_length=255), AfterValidator(_no_parent_dirs)
]


PackageName = Annotated[str, StringConstraints(pattern=PACKAGE_NAME)]


class UpstreamImage(_Strict):
    # name:tag, optionally behind a registry's host[:port]/ (a mirror); resolved in that registry each run
    image: Annotated[
        str, StringConstraints(pattern=r"^([a-z0-9][a-z0-9.-]*(:[0-9]{1,5})?/)?[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$")
    ] = "debian:bookworm-slim"
    suite: Annotated[str, StringConstraints(pattern=r"^[a-z]+$")] = "bookworm"


class SecurityTracker(_Strict):
    """Where a security rebuild's CVE ids are checked: Debian's security tracker data (its JSON).
    Fetched and cached for `max_age_h`; where it cannot be reached, the last copy fetched, else the
    recorded `excerpt` (which knows only the ids it holds: any other is refused as unknown)."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)] | None = (
        "https://security-tracker.debian.org/tracker/data/json"
    )
    max_age_h: float = Field(24.0, gt=0, le=24 * 30)
    excerpt: SafePath | None = "include/base/security-tracker-excerpt.json"


class RuntimeUser(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "app"
    uid: int = Field(10001, ge=1000, le=65533)


class BaseImageSpec(_Strict):
    """include/base/base.yaml: what the base image is made of."""

    upstream: UpstreamImage = UpstreamImage()
    repository: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$")]
    runtime_user: RuntimeUser = RuntimeUser()
    remove_packages: list[PackageName] = Field([], max_length=1000)
    common_packages: list[PackageName] = Field([], max_length=1000)
    setuid_allowlist: list[SafeAbsolutePath] = Field([], max_length=500)
    security_tracker: SecurityTracker = SecurityTracker()

    @field_validator("common_packages")
    @classmethod
    def _not_also_removed(cls, value: list[str], info: object) -> list[str]:
        removed = set(getattr(info, "data", {}).get("remove_packages", []))
        both = sorted(removed.intersection(value))
        if both:
            raise ValueError(f"packages both removed and installed: {both}")
        return value


class LocalImageRetention(_Strict):
    keep: int = Field(10, ge=1, le=1000)  # newest images per repository and registry, besides those in use


class LocalPlatform(_Strict):
    # Names this platform's containers, so several local platforms (the demo, the tests) can
    # share one Docker engine without touching each other's fleets.
    instance: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,15}$")] = "local"
    build_registry_port: int = Field(5500, ge=1024, le=65535)
    state_dir: SafePath = "var"
    prometheus_port: int = Field(9090, ge=1024, le=65535)
    # The traffic generator standing for real users: requests per second sent to each app in each region.
    traffic_rps: float = Field(20.0, gt=0, le=500)
    image_retention: LocalImageRetention = LocalImageRetention()


RegionName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,30}$")]


LOCAL_REGION_PORTS = ("registry_port", "lb_port", "lb_admin_port")
NOT_SET = 0  # a local port left out: allowed only when the platform is not local (validated below)

VpcId = Annotated[str, StringConstraints(pattern=r"^vpc-[0-9a-zA-Z]+$")]
SubnetId = Annotated[str, StringConstraints(pattern=r"^subnet-[0-9a-zA-Z]+$")]
SecurityGroupId = Annotated[str, StringConstraints(pattern=r"^sg-[0-9a-zA-Z]+$")]
AmiId = Annotated[str, StringConstraints(pattern=r"^ami-[0-9a-zA-Z]+$")]
ListenerArn = Annotated[
    str, StringConstraints(pattern=r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d*:listener/")
]
BucketName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]


class AwsRegion(_Strict):
    """A region's network and load balancer on AWS: what the account already has."""

    vpc_id: VpcId
    subnet_ids: list[SubnetId] = Field(..., min_length=1)
    security_group_ids: list[SecurityGroupId] = Field(..., min_length=1)
    listener_arn: ListenerArn  # the ALB listener that forwards to the colors' target groups
    # copies into this region are encrypted with this key when set: an id, alias or ARN
    kms_key_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9:/_-]{1,2048}$")] | None = None


class Region(_Strict):
    name: RegionName
    # Local platform only (required there, validated by PlatformConfig); 0 means not set.
    registry_port: int = Field(NOT_SET, ge=1024, le=65535)
    lb_port: int = Field(NOT_SET, ge=1024, le=65535)  # the region's load balancer: where users' requests arrive
    lb_admin_port: int = Field(NOT_SET, ge=1024, le=65535)  # its runtime API, stats page and Prometheus exporter
    # AWS platform only (required there).
    aws: AwsRegion | None = None


class UpstreamAmi(_Strict):
    """Where the base AMI starts: a public SSM parameter (Debian publishes one) or a pinned image id."""

    ssm_parameter: Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9_./-]+$")] | None = (
        "/aws/service/debian/release/bookworm/latest/amd64"
    )
    image_id: AmiId | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("image_id") and "ssm_parameter" not in data:
            data = {**data, "ssm_parameter": None}  # a pinned id alone replaces the default parameter
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> UpstreamAmi:
        if (self.ssm_parameter is None) == (self.image_id is None):
            raise ValueError(
                "aws.upstream_ami: set exactly one of 'ssm_parameter' (e.g. "
                "/aws/service/debian/release/bookworm/latest/amd64) or 'image_id' (ami-...), "
                f"got ssm_parameter={self.ssm_parameter!r} image_id={self.image_id!r}"
            )
        return self


class AwsPlacement(_Strict):
    """Where an instance of ours runs: a subnet, its security groups and (optional) instance profile."""

    subnet_id: SubnetId
    security_group_ids: list[SecurityGroupId] = Field(..., min_length=1)
    instance_profile: str | None = None


class AwsManagedPlacement(AwsPlacement):
    """A placement whose instances take commands over SSM Run Command: the SSM agent registers only
    with an instance profile that allows it (AmazonSSMManagedInstanceCore), so one is required."""

    instance_profile: str = Field(..., min_length=1)


class AwsBuilder(AwsManagedPlacement):
    """The builder: its profile also needs read on the artifact bucket (the bake fetches the wheel)."""


class AwsEnvironments(_Strict):
    dev: AwsPlacement
    staging: AwsManagedPlacement  # the staging test command runs on the instance over SSM

    def get(self, name: str) -> AwsPlacement:
        if name not in ("dev", "staging"):
            raise ConfigError(f"aws.environments has no environment '{name}'; allowed: dev, staging")
        placement: AwsPlacement = getattr(self, name)
        return placement


class ImageRetention(_Strict):
    keep: int = Field(5, ge=1, le=1000)  # newest images per repository never deregistered
    min_age_days: int = Field(14, ge=0, le=3650)  # days; younger images are never deregistered


class AlbMetrics(_Strict):
    """How the ALB's CloudWatch metrics arrive: standard resolution, one point a minute, one to three
    minutes late. The gates step by `period_s` and judge a window `delay_s` after it ends."""

    period_s: int = Field(60, ge=1)
    delay_s: float = Field(180.0, ge=0)

    @field_validator("period_s")
    @classmethod
    def _a_cloudwatch_period(cls, value: int) -> int:
        if value not in (1, 5, 10, 30) and value % 60:
            raise ValueError(f"{value} is not a CloudWatch period: 1, 5, 10, 30 or a multiple of 60")
        return value


class AwsSettings(_Strict):
    """The `aws:` block: account-wide settings; per-region ones live in each region's `aws:` block."""

    connection_id: str = "aws_default"  # endpoint_url in its extra points it at an emulator
    build_region: RegionName  # AMIs are built and tested here, then copied to the other regions
    instance_type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")] = "t3.micro"
    upstream_ami: UpstreamAmi = UpstreamAmi()
    builder: AwsBuilder
    environments: AwsEnvironments
    artifact_bucket: BucketName  # in build_region: packaged wheels go here
    smoke_checks: Literal["http", "target_health"] = "http"  # an emulator's instances serve no HTTP
    image_retention: ImageRetention = ImageRetention()
    alb_metrics: AlbMetrics = AlbMetrics()
    # Seconds between the triggerer's looks while a deferred wait goes on (a fleet filling and
    # passing its health checks): AWS's own waiters look every 10 to 15.
    wait_poll_s: int = Field(10, ge=1, le=300)


class Rollout(_Strict):
    """Waves of regions: the first wave's single region is the pilot; later waves run in parallel."""

    waves: list[list[RegionName]] = Field(..., min_length=1)
    synchronized: bool = False  # one flip across all regions at once instead of waves

    @field_validator("waves")
    @classmethod
    def _pilot_first(cls, waves: list[list[str]]) -> list[list[str]]:
        if len(waves[0]) != 1:
            raise ValueError(f"the first wave is the pilot and must hold exactly one region, got {waves[0]}")
        flat = [r for wave in waves for r in wave]
        if len(set(flat)) != len(flat) or any(not wave for wave in waves):
            raise ValueError(f"each region may appear in one wave only, and no wave may be empty: {waves}")
        return waves

    @property
    def regions(self) -> list[str]:
        return [r for wave in self.waves for r in wave]


class CopySettings(_Strict):
    attempts: int = Field(3, ge=1, le=10)
    backoff_s: float = Field(2.0, ge=0, le=300)  # seconds; doubles after each failed attempt


class Signing(_Strict):
    key_file: str = "var/keys/release-signing.pem"
    connection_id: str | None = None


# What a receiver can be told of: a release failed (with its cause), a release or rollback put the
# previous color back, a person stopped a release, an approval waits, a base was published or promoted.
NotificationEvent = Literal[
    "release_failed", "rolled_back", "stopped", "approval_waiting", "base_published", "base_promoted"
]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = get_args(NotificationEvent)
EMAIL_ADDRESS = r"^[^@\s]+@[^@\s]+$"


class Webhook(_Strict):
    """A receiver of JSON notifications (one POST per event)."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2000)]
    events: list[NotificationEvent] = Field(default_factory=lambda: list(NOTIFICATION_EVENTS), min_length=1)


class Email(_Strict):
    """Mail to people, through an Airflow SMTP connection (the smtp provider's notifier)."""

    to: list[Annotated[str, StringConstraints(pattern=EMAIL_ADDRESS, max_length=254)]] = Field(
        min_length=1, max_length=50
    )
    connection_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,200}$")] = "smtp_default"
    from_email: Annotated[str, StringConstraints(pattern=EMAIL_ADDRESS, max_length=254)] | None = None
    events: list[NotificationEvent] = Field(default_factory=lambda: list(NOTIFICATION_EVENTS), min_length=1)


class Notifications(_Strict):
    """Who hears of what, through Airflow's notifiers; nobody by default."""

    webhooks: list[Webhook] = Field(default_factory=list, max_length=20)
    email: list[Email] = Field(default_factory=list, max_length=20)

    def webhook_urls(self, event: str) -> list[str]:
        return [hook.url for hook in self.webhooks if event in hook.events]

    def mail_for(self, event: str) -> list[Email]:
        return [mail for mail in self.email if event in mail.events]


class TimingOverrides(_Strict):
    """Applied over every app's canary, bluegreen and health settings: shorter waits for a laptop or CI."""

    canary: dict[str, float | int | str] = Field(default_factory=dict)
    bluegreen: dict[str, float | int] = Field(default_factory=dict)
    health: dict[str, float] = Field(default_factory=dict)

    @field_validator("health")
    @classmethod
    def _health_keys(cls, values: dict[str, object]) -> dict[str, object]:
        unknown = sorted(set(values) - {"timeout_s"})
        if unknown:
            raise ValueError(f"unknown keys {unknown}; allowed: ['timeout_s']")
        return values

    @field_validator("canary")
    @classmethod
    def _canary_keys(cls, values: dict[str, object]) -> dict[str, object]:
        allowed = {"warmup_s", "interval_s", "lifetime_s", "step_s", "rate_window", "min_samples", "traffic_percent"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown keys {unknown}; allowed: {sorted(allowed)}")
        return values

    @field_validator("bluegreen")
    @classmethod
    def _bluegreen_keys(cls, values: dict[str, object]) -> dict[str, object]:
        allowed = {
            "size",
            "step_pause_s",
            "post_flip_warmup_s",
            "post_flip_window_s",
            "post_flip_step_s",
            "rollback_window_s",
            "approval_timeout_s",
        }
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown keys {unknown}; allowed: {sorted(allowed)}")
        return values


class PlatformConfig(_Strict):
    """include/platform.yaml: which platform, which regions."""

    platform: Literal["local", "aws"] = "local"
    local: LocalPlatform = LocalPlatform()
    aws: AwsSettings | None = None
    regions: list[Region] = Field(..., min_length=1, max_length=64)
    rollout: Rollout | None = None
    copy_settings: CopySettings = Field(CopySettings(), alias="copy")
    signing: Signing = Signing()
    timing_overrides: TimingOverrides | None = None
    notifications: Notifications = Notifications()

    @model_validator(mode="after")
    def _platform_fields_present(self) -> PlatformConfig:
        """Each platform needs its own fields (the schema of its section); checked here, once."""
        PLATFORM_FIELD_CHECKS[self.platform](self)
        return self

    @model_validator(mode="after")
    def _waves_name_known_regions(self) -> PlatformConfig:
        known = [r.name for r in self.regions]
        if self.rollout is not None:
            unknown = sorted(set(self.rollout.regions) - set(known))
            if unknown:
                raise ValueError(f"rollout.waves name regions that are not defined: {unknown}; defined: {known}")
        return self

    @property
    def waves(self) -> list[list[str]]:
        """Configured waves, or the pilot (first region) then all the others in one wave."""
        if self.rollout is not None:
            return self.rollout.waves
        names = [r.name for r in self.regions]
        return [names[:1], names[1:]] if len(names) > 1 else [names]

    def region(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        raise ConfigError(f"region '{name}' is not defined in the platform; defined: {[r.name for r in self.regions]}")

    @property
    def aws_settings(self) -> AwsSettings:
        """The `aws:` block, or a ConfigError saying the platform has none."""
        if self.aws is None:
            raise ConfigError(f"platform is '{self.platform}', not 'aws': there are no aws settings (no `aws:` block)")
        return self.aws

    def aws_region(self, name: str) -> AwsRegion:
        """A region's `aws:` block (vpc, subnets, listener, kms key), or a ConfigError naming the region."""
        region = self.region(name)
        if region.aws is None:
            raise ConfigError(f"region '{name}' has no 'aws' block (vpc_id, subnet_ids, listener_arn, ...)")
        return region.aws

    @field_validator("regions")
    @classmethod
    def _unique(cls, regions: list[Region]) -> list[Region]:
        names = [r.name for r in regions]
        ports = [p for r in regions for p in (r.registry_port, r.lb_port, r.lb_admin_port) if p != NOT_SET]
        if len(set(names)) != len(names) or len(set(ports)) != len(ports):
            raise ValueError(f"region names and registry ports must be unique: {names} {ports}")
        return regions

    @property
    def build_registry(self) -> str:
        return f"127.0.0.1:{self.local.build_registry_port}"


def _local_fields(config: PlatformConfig) -> None:
    for index, r in enumerate(config.regions):
        missing = [f for f in LOCAL_REGION_PORTS if f not in r.model_fields_set]
        if missing:
            raise ValueError(
                f"regions.{index} ({r.name}): {', '.join(missing)} required when platform is 'local' "
                f"(allowed: a port 1024-65535)"
            )
    # Each region also uses lb_admin_port + 1000 for the load balancer's runtime API.
    used = [
        ("local.build_registry_port", config.local.build_registry_port),
        ("local.prometheus_port", config.local.prometheus_port),
    ]
    for r in config.regions:
        used += [
            (f"{r.name}.registry_port", r.registry_port),
            (f"{r.name}.lb_port", r.lb_port),
            (f"{r.name}.lb_admin_port", r.lb_admin_port),
            (f"{r.name}.lb_admin_port+1000 (runtime API)", r.lb_admin_port + 1000),
        ]
    seen: dict[int, str] = {}
    for name, port in used:
        if port in seen:
            raise ValueError(f"port {port} is used twice: by {seen[port]} and by {name}")
        seen[port] = name


def _aws_fields(config: PlatformConfig) -> None:
    known = [r.name for r in config.regions]
    if config.aws is None:
        raise ValueError(
            "field 'aws' is required when platform is 'aws' (connection_id, build_region, builder, "
            "environments, artifact_bucket, ...); see include/aws/platform.yaml"
        )
    if config.aws.build_region not in known:
        raise ValueError(f"aws.build_region '{config.aws.build_region}' is not one of the regions: {known}")
    for index, r in enumerate(config.regions):
        if r.aws is None:
            raise ValueError(
                f"regions.{index} ({r.name}): field 'aws' (vpc_id, subnet_ids, security_group_ids, "
                "listener_arn, kms_key_id) is required when platform is 'aws'"
            )


# platform name -> the check that its own fields are present (and coherent)
PLATFORM_FIELD_CHECKS: dict[str, Callable[[PlatformConfig], None]] = {"local": _local_fields, "aws": _aws_fields}


class BaseImageRunParams(_Strict):
    """The base_image trigger form. Mirrors the DAG's Params so REST and UI callers get one rule."""

    reason: Literal["weekly", "security", "manual"] = "weekly"
    cves: list[Annotated[str, StringConstraints(pattern=CVE_PATTERN)]] = []
    force: bool = False
    fast_track: bool = False

    @field_validator("cves")
    @classmethod
    def _unique_cves(cls, cves: list[str]) -> list[str]:
        return sorted(set(cves))

    @field_validator("fast_track")
    @classmethod
    def _fast_track_is_for_security(cls, fast_track: bool, info: ValidationInfo) -> bool:
        # Skipping the canary tier's trial is worth its risk only for a vulnerability fix.
        reason = info.data.get("reason")
        if fast_track and reason != "security":
            raise ValueError(
                f"only a security rebuild may skip the canary-tier trial: set reason to 'security' (it is {reason!r})"
            )
        return fast_track


MAX_ERRORS_SHOWN = 8  # a document wrong everywhere says so in a few lines, not thousands
MAX_VALUE_SHOWN = 80  # characters of a bad value quoted back


def describe_validation_error(source: str, error: ValidationError) -> str:
    """One line per bad field: `source: field.path: message (got value)`, bounded in length."""
    lines = []
    items = error.errors()
    for item in items[:MAX_ERRORS_SHOWN]:
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {bounded(repr(got), MAX_VALUE_SHOWN)})"
        lines.append(f"{source}: field '{bounded(field, 200)}': {bounded(item['msg'], 400)}{shown}")
    if len(items) > MAX_ERRORS_SHOWN:
        lines.append(f"{source}: ... and {len(items) - MAX_ERRORS_SHOWN} more invalid field(s)")
    return bounded("\n".join(lines))


def _load_yaml(path: Path) -> object:
    try:
        return load_yaml_once(path)
    except YamlRefused as exc:
        raise ConfigError(str(exc)) from None


def parse_model(model: type[ModelT], data: object, source: str) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from None


@lru_cache(maxsize=8)
def _load_platform(path: str, mtime: float) -> PlatformConfig:
    return parse_model(PlatformConfig, _load_yaml(Path(path)), path)


def platform_file() -> Path:
    """$IMMUTABLE_PLATFORM_FILE read at call time (tests switch platforms per module), else include/platform.yaml."""
    configured = os.environ.get("IMMUTABLE_PLATFORM_FILE")
    return Path(configured) if configured else PLATFORM_FILE


def load_platform(path: Path | None = None) -> PlatformConfig:
    target = path or platform_file()
    return _load_platform(str(target), target.stat().st_mtime if target.exists() else 0.0)


def state_dir() -> Path:
    """Registry storage, logs, pid files and records; configurable so tests can isolate it."""
    configured = os.environ.get("IMMUTABLE_STATE_DIR")
    if configured:
        return Path(configured)
    return PROJECT_ROOT / load_platform().local.state_dir


def load_base_spec(path: Path | None = None) -> BaseImageSpec:
    """include/base/base.yaml, or $IMMUTABLE_BASE_SPEC_FILE (`make aws-smoke` builds a base of its own)."""
    configured = os.environ.get("IMMUTABLE_BASE_SPEC_FILE")
    target = path or (Path(configured) if configured else BASE_SPEC_FILE)
    return parse_model(BaseImageSpec, _load_yaml(target), str(target))


def parse_base_params(params: dict[str, object]) -> BaseImageRunParams:
    known = {k: v for k, v in params.items() if k in BaseImageRunParams.model_fields}
    return parse_model(BaseImageRunParams, known, "base_image trigger")


def is_cve_id(value: str) -> bool:
    return re.fullmatch(CVE_PATTERN, value) is not None
