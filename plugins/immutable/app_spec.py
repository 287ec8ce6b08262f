"""App release specs (include/apps/<app>.yaml) and the release trigger form, validated with pydantic.

One spec is one `release_<app>` DAG. A broken spec is reported with its file and field, and never
stops the other apps' DAGs from loading.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from immutable.config import ConfigError, PlatformConfig, RegionName, _load_yaml, _Strict, parse_model
from immutable.paths import PROJECT_ROOT, apps_dir
from immutable.validated_once import ValidatedOnce

SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z][0-9A-Za-z.-]*)?$"
GIT_REF = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"
# The same rule for the trigger form (a JSON-schema pattern, checked before a run is created): empty,
# or a ref without `..`.
FORM_GIT_REF = r"^$|^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"
APP_NAME = r"^[a-z][a-z0-9-]{1,30}$"

# Environment values reach a container's or instance's environment: printable, one line each.
EnvValue = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$", max_length=1024)]
EnvMap = Annotated[
    dict[Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")], EnvValue], Field(max_length=100)
]
# A URL path (the load balancer's health check and the smoke checks): no spaces, quotes or shell
# metacharacters, so it is safe in HAProxy's config and in a probe's argument.
UrlPath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._~%/-]*(\?[A-Za-z0-9._~%&=-]*)?$", max_length=512)]
# One argument of a command run as argv (never through a shell here; quoted where a shell runs it).
Argument = Annotated[str, StringConstraints(pattern=r"^[^\x00\n\r]*$", max_length=1024)]


def _no_double_dot(ref: str) -> str:
    if ".." in ref:
        raise ValueError("a git ref may not contain '..' (git refuses it, and it reads as a range)")
    return ref


class GitSource(_Strict):
    url: Annotated[str, StringConstraints(pattern=r"^(https?|ssh|git|file)://[A-Za-z0-9._~%:@/+-]+$", max_length=512)]
    ref: Annotated[str, StringConstraints(pattern=GIT_REF), AfterValidator(_no_double_dot)] = "main"


def source_folder_problem(path: str) -> str | None:
    """Why `path` is not a source folder of this repo, or None. A fact of the filesystem, not of the
    spec: checked again on every parse, also for a spec whose validation was kept."""
    resolved = (PROJECT_ROOT / path).resolve()
    if not resolved.is_relative_to(PROJECT_ROOT.resolve()):
        return f"'{path}' is outside the repository; sources must be folders of this repo"
    if not resolved.is_dir():
        return f"'{path}' is not a folder of this repo"
    return None


class Source(_Strict):
    """Exactly one of `path` (a folder inside this repo) or `git` (a URL and ref)."""

    # `..` is allowed by the pattern so the check below can say the folder is outside the repo
    path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/+-]+$", max_length=255)] | None = None
    git: GitSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.path is None) == (self.git is None):
            raise ValueError("set exactly one of 'path' (a folder in this repo) or 'git' (url and ref)")
        return self

    @field_validator("path")
    @classmethod
    def _inside_repo(cls, path: str | None) -> str | None:
        if path is not None and (problem := source_folder_problem(path)):
            raise ValueError(problem)
        return path

    def local_dir(self) -> Path | None:
        return (PROJECT_ROOT / self.path).resolve() if self.path else None


class PythonWheelPackaging(_Strict):
    """Build a wheel (and its dependencies' wheels) in a container from the base image."""

    kind: Literal["python-wheel"]
    distribution: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


# Later kinds (an OS package, say) join this as a discriminated union on `kind`.
Packaging = PythonWheelPackaging


class Runtime(_Strict):
    port: int = Field(..., ge=1024, le=65535)
    command: list[Argument] = Field(..., min_length=1, max_length=64)
    health_path: UrlPath = "/healthz"
    env: EnvMap = Field(default_factory=dict)


class SmokeCheck(_Strict):
    path: UrlPath
    status: int = Field(200, ge=100, le=599)
    body_contains: Annotated[str, StringConstraints(max_length=1024)] | None = None  # may use {version}


class DevSettings(_Strict):
    smoke_checks: list[SmokeCheck] = Field(..., min_length=1, max_length=100)
    env: EnvMap = Field(default_factory=dict)


class StagingSettings(_Strict):
    env: EnvMap = Field(default_factory=dict)
    # run in a container from the same image; {url} is the app
    test_command: list[Argument] = Field(..., min_length=1, max_length=64)


class HealthWait(_Strict):
    timeout_s: float = Field(60.0, gt=0, le=1800)  # seconds to wait for the health path to answer 200


QUERY_HELP = "PromQL with $app, $region, $color and $window ($window: the rate window, such as 10s)"
CLOUDWATCH_HELP = (
    "CloudWatch metric for the aws platform; dimension values may use $app, $region, $color, "
    "$target_group and $load_balancer (the color's ALB target group and load balancer dimensions)"
)


class CloudWatchMetric(_Strict):
    namespace: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    # A percentile (p90) is what a latency check wants: an ALB reports each request's response time.
    stat: Annotated[str, StringConstraints(pattern=r"^(Sum|Average|Minimum|Maximum|SampleCount|p\d{1,2}(\.\d+)?)$")] = (
        "Average"
    )
    dimensions: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,255}$")],
        Annotated[str, StringConstraints(min_length=1, max_length=1024)],
    ] = Field(default_factory=dict, max_length=30)


class CloudWatchQuery(_Strict):
    """One series from CloudWatch, or the ratio of two (computed here: metric math is not everywhere)."""

    metric: CloudWatchMetric
    # A ratio such as 5xx / requests; a missing numerator point next to a denominator point counts as 0.
    divide_by: CloudWatchMetric | None = None


class _Queried(_Strict):
    query: str | None = Field(None, min_length=1, max_length=2048, description=QUERY_HELP)
    cloudwatch: CloudWatchQuery | None = Field(None, description=CLOUDWATCH_HELP)

    @model_validator(mode="after")
    def _has_a_query(self) -> _Queried:
        if self.query is None and self.cloudwatch is None:
            raise ValueError("set `query` (PromQL, the local platform) and/or `cloudwatch` (the aws platform)")
        return self


class MetricCheck(_Queried):
    """One canary metric: the same query runs for the canary and the baseline."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,40}$")]
    direction: Literal["increase", "decrease", "either"] = "increase"
    critical: bool = False
    must_have_data: bool = True
    group: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,40}$")] = "default"
    tolerance_rel: float = Field(0.25, ge=0)
    tolerance_abs: float = Field(0.0, ge=0)


class CanarySettings(_Strict):
    size: int = Field(1, ge=1, le=20)
    traffic_percent: float = Field(10.0, gt=0, le=25)  # each of canary and baseline takes this share
    warmup_s: float = Field(60.0, ge=0)
    interval_s: float = Field(300.0, gt=0)
    lifetime_s: float = Field(900.0, gt=0)
    step_s: float = Field(5.0, gt=0)  # one sample per step: interval_s / step_s samples per interval
    rate_window: Annotated[str, StringConstraints(pattern=r"^\d+[smh]$")] = "30s"
    confidence: float = Field(0.98, gt=0.5, lt=1)
    min_samples: int = Field(50, ge=3)
    pass_score: float = Field(95.0, gt=0, le=100)
    marginal_score: float = Field(75.0, ge=0, lt=100)
    # The final interval only marginal (above marginal_score, under pass_score): fail the release, or
    # ask a person (an approval showing the score table; no answer in time is a refusal).
    on_marginal: Literal["fail", "ask"] = "fail"
    group_weights: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,40}$")], float] = Field(
        default_factory=dict, max_length=50
    )
    metrics: list[MetricCheck] = Field(..., min_length=1, max_length=50)

    @model_validator(mode="after")
    def _coherent(self) -> CanarySettings:
        if self.lifetime_s < self.interval_s:
            raise ValueError(f"lifetime_s ({self.lifetime_s}) must be at least interval_s ({self.interval_s})")
        if self.marginal_score >= self.pass_score:
            raise ValueError(f"marginal_score ({self.marginal_score}) must be below pass_score ({self.pass_score})")
        return self

    @property
    def intervals(self) -> int:
        return max(1, int(self.lifetime_s // self.interval_s))

    def judge_settings(self) -> dict[str, Any]:
        """How each interval is judged (the canary trigger's `analysis`, see immutable.analysis)."""
        return {
            "confidence": self.confidence,
            "min_samples": self.min_samples,
            "pass_score": self.pass_score,
            "marginal_score": self.marginal_score,
            "group_weights": dict(self.group_weights),
            "on_marginal": self.on_marginal,
        }


class ThresholdCheck(_Queried):
    """A post-flip check on the new color alone: fail when the value goes above `max`."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,40}$")]
    max: float
    must_have_data: bool = True


class BlueGreenSettings(_Strict):
    size: int = Field(2, ge=1, le=50)
    weight_steps: list[float] = Field(default_factory=lambda: [100.0], min_length=1, max_length=20)
    step_pause_s: float = Field(10.0, ge=0)
    # Before judging the new color, let its metrics fill a rate window; an empty window is no data.
    post_flip_warmup_s: float = Field(30.0, ge=0)
    post_flip_window_s: float = Field(120.0, gt=0)
    post_flip_step_s: float = Field(5.0, gt=0)
    post_flip_failures: int = Field(2, ge=1)  # consecutive bad evaluations before flipping back
    post_flip_checks: list[ThresholdCheck] = Field(..., min_length=1, max_length=50)
    rollback_window_s: float = Field(1800.0, ge=0)  # the old color is kept this long without traffic
    # With `approval: true`: how long the approval waits for an answer; none in time is a refusal.
    approval_timeout_s: float = Field(4 * 3600.0, gt=0, le=7 * 24 * 3600.0)

    @field_validator("weight_steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError(f"weight_steps must increase strictly within (0, 100] and end at 100, got {steps}")
        return steps


class AppSpec(_Strict):
    name: Annotated[str, StringConstraints(pattern=APP_NAME)]
    source: Source
    packaging: Packaging
    runtime: Runtime
    tier: Literal["canary", "critical"]
    dev: DevSettings
    staging: StagingSettings
    health: HealthWait = HealthWait()
    regions: list[RegionName] | None = None
    waves: list[list[RegionName]] | None = None
    synchronized: bool | None = None  # one flip across all regions; default from the platform's rollout
    approval: bool = False  # a human approves before the rollout leaves the pilot region
    canary: CanarySettings
    bluegreen: BlueGreenSettings

    def for_platform(self, platform: PlatformConfig) -> AppSpec:
        """This spec with the platform's timing overrides applied (short windows on a laptop or in CI)."""
        overrides = platform.timing_overrides
        if overrides is None:
            return self
        return self.model_copy(
            update={
                "canary": self.canary.model_copy(update=overrides.canary),
                "bluegreen": self.bluegreen.model_copy(update=overrides.bluegreen),
                "health": self.health.model_copy(update=overrides.health),
            }
        )

    def check_metrics_for(self, platform_kind: str, field: str) -> None:
        """Every gate metric must have a query (in `field`) the platform's metrics backend understands."""
        missing = [
            f"canary.metrics[{i}] ({m.name})" for i, m in enumerate(self.canary.metrics) if not getattr(m, field)
        ]
        missing += [
            f"bluegreen.post_flip_checks[{i}] ({c.name})"
            for i, c in enumerate(self.bluegreen.post_flip_checks)
            if not getattr(c, field)
        ]
        if missing:
            raise ConfigError(
                f"app '{self.name}': the {platform_kind} platform needs `{field}` on {', '.join(missing)}"
            )

    def is_synchronized(self, platform: PlatformConfig) -> bool:
        if self.synchronized is not None:
            return self.synchronized
        return bool(platform.rollout and platform.rollout.synchronized)

    @property
    def repository(self) -> str:
        return f"apps/{self.name}"

    def rollout_waves(self, platform: PlatformConfig) -> list[list[str]]:
        """This app's waves: its own, else the platform's restricted to its regions."""
        known = [r.name for r in platform.regions]
        if self.waves is not None:
            waves = self.waves
        else:
            allowed = set(self.regions or known)
            waves = [[r for r in wave if r in allowed] for wave in platform.waves]
            waves = [w for w in waves if w]
        unknown = sorted({r for w in waves for r in w} - set(known))
        if unknown:
            raise ConfigError(f"app '{self.name}': regions {unknown} are not in the platform; defined: {known}")
        if len(waves[0]) != 1:
            raise ConfigError(f"app '{self.name}': the first wave is the pilot and must hold one region: {waves[0]}")
        return waves

    def rollout_regions(self, platform: PlatformConfig) -> list[str]:
        return [r for wave in self.rollout_waves(platform) for r in wave]


class ReleaseParams(_Strict):
    """The release trigger form. An empty version re-releases what runs in production now."""

    version: str = ""
    ref: str = ""
    note: Annotated[str, StringConstraints(max_length=500)] = ""

    @field_validator("version")
    @classmethod
    def _semver(cls, version: str) -> str:
        if version and not re.fullmatch(SEMVER, version):
            raise ValueError(
                "must be a semantic version MAJOR.MINOR.PATCH[-PRERELEASE] such as 1.2.0, "
                "or empty to re-release the version in production"
            )
        return version

    @field_validator("ref")
    @classmethod
    def _git_ref(cls, ref: str) -> str:
        if ref and (not re.fullmatch(GIT_REF, ref) or ".." in ref):
            raise ValueError("must be a git branch, tag or commit (letters, digits, . _ / -), or empty")
        return ref


def load_app_spec(path: Path) -> AppSpec:
    spec = parse_model(
        AppSpec, _load_yaml(path), str(path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path)
    )
    if spec.name != path.stem:
        raise ConfigError(f"{path.name}: field 'name': '{spec.name}' must match the file name '{path.stem}'")
    return spec


def load_app_specs(folder: Path | None = None) -> tuple[dict[str, AppSpec], dict[str, str]]:
    """All specs that validate, and an error message per file that does not. A spec unchanged since
    it last validated is not validated again (see `validated_once`); its source folder is checked."""
    folder = folder or apps_dir()
    kept: ValidatedOnce[AppSpec] = ValidatedOnce(folder, "apps")
    specs: dict[str, AppSpec] = {}
    errors: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            key, spec = kept.lookup(path)
            if spec is None or (spec.source.path and source_folder_problem(spec.source.path)):
                spec = load_app_spec(path)  # a folder gone since: validating names the field and why
            kept.keep(path, key, spec)
        except (ConfigError, OSError) as exc:
            errors[path.name] = str(exc)
            continue
        specs[spec.name] = spec
    kept.save()
    return specs, errors


def app_spec(name: str, folder: Path | None = None) -> AppSpec:
    folder = folder or apps_dir()
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown app '{name}': no {path.name} in {folder}; known apps: {known}")
    return load_app_spec(path)


def parse_release_params(params: dict[str, object]) -> ReleaseParams:
    known = {k: v for k, v in params.items() if k in ReleaseParams.model_fields}
    return parse_model(ReleaseParams, known, "release trigger")
