"""The platform interface: everything the pipelines, operators and triggers ask of a cloud.

`platform_for(config)` (in `immutable.platforms`) returns one `Platform`; its parts are the five
protocols below. `immutable.local` and `immutable.aws` each implement all of them, in their own
package; a new platform is one more package that does (see the README's "Adding a platform").
The pipelines never name a cloud: what differs between clouds is a method here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from types import TracebackType

    from immutable.app_spec import AppSpec, SmokeCheck
    from immutable.config import BaseImageSpec, PlatformConfig
    from immutable.images.base import CandidateInfo
    from immutable.metric_timing import BackendTiming
    from immutable.payloads import Baked, BuiltBase, ImageRef, Packaged, Plan, PublishedBase, RegionCopy
    from immutable.production_state import ProductionState


class Images(Protocol):
    """Build, publish, bake, sign, copy and verify images; the base's channels; retention."""

    # --- the base image -------------------------------------------------------------------------

    def resolve_upstream(self, spec: BaseImageSpec) -> tuple[str, str]:
        """(the upstream image asked for, the immutable id it resolves to now)."""
        ...

    def base_candidate(self, spec: BaseImageSpec) -> CandidateInfo: ...

    def start_pending_upgrades(self, spec: BaseImageSpec, digest: str, *, run_id: str) -> dict[str, Any]:
        """Start listing the packages of the published base `digest` with an upgrade available in the
        archive now. Where it ends at once the answer holds them (`upgradable`); else
        `pending_upgrades_waiter` names what to wait for."""
        ...

    def pending_upgrades_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        """None once the listing has ended; else a trigger (the task waits in the triggerer) and its timeout."""
        ...

    def finish_pending_upgrades(self, running: dict[str, Any]) -> dict[str, Any]:
        """After a wait: the listing's next step, or the packages (`upgradable`) once it has ended."""
        ...

    def base_versions(self, repository: str) -> list[str]:
        """Every version of the base published so far (for the next version number)."""
        ...

    def build_base(
        self,
        *,
        spec: BaseImageSpec,
        upstream: dict[str, Any],
        version: str,
        labels: dict[str, str],
        run_id: str,
        wait: bool = True,
    ) -> BuiltBase:
        """Build the base image. With `wait=False` a platform whose images take long to make may
        return `pending=True`: the caller waits (`base_waiter`) and calls `finish_base`."""
        ...

    def base_waiter(self, built: BuiltBase) -> tuple[Any, float]:
        """(the trigger that waits for a pending base build, its timeout in seconds)."""
        ...

    def finish_base(self, built: BuiltBase) -> BuiltBase:
        """A pending base build once its wait ended: the image, done, or an error saying why."""
        ...

    def start_test_base(self, *, spec: BaseImageSpec, built: BuiltBase) -> dict[str, Any]:
        """Start the checks of the base's promises on the built image. Where they end at once the
        answer holds their results (`checks`: name, passed, detail); else `test_base_waiter` names
        what to wait for."""
        ...

    def test_base_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        """None once the checks have ended; else a trigger (the task waits in the triggerer) and its timeout."""
        ...

    def finish_test_base(self, running: dict[str, Any]) -> dict[str, Any]:
        """After a wait: the checks' next step, or their results (`checks`) once they have ended."""
        ...

    def base_packages(self, built: BuiltBase) -> dict[str, dict[str, str]]:
        """Every package of the built image with its version (the base's manifest)."""
        ...

    def publish_base(self, *, spec: BaseImageSpec, built: BuiltBase) -> PublishedBase:
        """Push the version and move the `candidate` channel to it; idempotent within one run."""
        ...

    def channel(self, repository: str, channel: str) -> tuple[str, dict[str, str]] | None:
        """(digest, labels) of the image the channel points at, or None."""
        ...

    def move_channel(self, repository: str, channel: str, digest: str) -> None: ...

    def base_name(self, repository: str, version: str) -> str:
        """The base's human name for the app image's `base.name` label."""
        ...

    # --- app images -----------------------------------------------------------------------------

    def package(self, *, plan: Plan, spec: AppSpec, uid: int) -> Packaged:
        """Build the app's wheel and store it where `bake` fetches it; record its sha256."""
        ...

    def bake(
        self,
        *,
        plan: Plan,
        spec: AppSpec,
        packaged: Packaged,
        labels: dict[str, str],
        run_id: str,
        wait: bool = True,
    ) -> Baked:
        """Install the package onto the base pinned by digest, with `labels`; push by digest. A retry
        of the same run reuses what it baked. With `wait=False` a platform whose images take long to
        make may return `pending=True`: the caller waits (`bake_waiter`) and calls `finish_bake`."""
        ...

    def bake_waiter(self, baked: Baked) -> tuple[Any, float]:
        """(the trigger that waits for a pending bake, its timeout in seconds); only for `pending` bakes."""
        ...

    def finish_bake(self, baked: Baked) -> Baked:
        """A pending bake once its wait ended: the image done (with its labels), or an error saying why."""
        ...

    def sign(self, image: ImageRef) -> str:
        """Sign the digest and its provenance and store the signature beside the image; returns its name."""
        ...

    def verify_in(self, region: str | None, repository: str, digest: str) -> dict[str, str]:
        """Check the signature where the image will be deployed from (None: the build location);
        returns its labels. Raises `signing.SignatureError`."""
        ...

    def resolve(self, repository: str, reference: str) -> str | None:
        """The digest at the build location of a version (its newest build: a re-release on a new base is
        one more build of the same version) or of a digest of the repository; None: no such image."""
        ...

    def store_revocation(self, repository: str, digest: str, document: bytes) -> str:
        """Keep the signed revocation record of the image where every deploy step reads it; returns where."""
        ...

    def revocation_document(self, repository: str, digest: str) -> bytes | None:
        """The stored revocation record of the image (not yet verified), or None: it is not revoked."""
        ...

    def sbom_url(self, region: str | None, repository: str, digest: str) -> str | None:
        """Where a person reads the image's SBOM (CycloneDX JSON) in `region`; None: it has none there."""
        ...

    def copy_to(self, region: str, image: Baked, *, wait: bool = True) -> RegionCopy:
        """Copy the image into `region`, idempotent. With `wait=False` a platform whose copies take
        long may return `pending=True`: the caller waits (`copy_waiter`) and calls `finish_copy`."""
        ...

    def copy_waiter(self, copy: RegionCopy) -> tuple[Any, float]:
        """(the trigger that waits for a pending copy, its timeout in seconds); only for `pending` copies."""
        ...

    def finish_copy(self, image: Baked, copy: RegionCopy, failure: str | None = None) -> RegionCopy:
        """A copy that is done (or failed, `failure` saying why): verify it in its region, or clean up."""
        ...

    def describe_copies(self, image: Baked, copies: Sequence[RegionCopy]) -> str:
        """A table of the copies for the log."""
        ...

    def uri(self, region: str | None, repository: str, digest: str) -> str:
        """What a fleet or an environment in `region` (None: the build location) runs for the image."""
        ...

    def digest_in(self, region: str, repository: str, reference: str) -> str | None: ...

    def versions_in(self, region: str, repository: str) -> list[str]: ...

    def build_location(self) -> str: ...

    def retain(self, repository: str, now: datetime, *, protect: Sequence[str] = ()) -> dict[str, Any]:
        """Remove old images nothing runs or points at, per the platform's policy; never those in
        `protect` (a release's own image). Never raises for an image it could not remove."""
        ...


class Environments(Protocol):
    """Short-lived dev and staging environments, named deterministically per run."""

    def create(
        self, *, kind: str, name: str, spec: AppSpec, image: ImageRef, run_id: str, wait: bool = True
    ) -> dict[str, str]:
        """Start the environment; with `wait=False` return before it is healthy (`pending_create`)."""
        ...

    def pending_create(self, environment: dict[str, str]) -> tuple[Any, float] | None:
        """What a `create(wait=False)` still waits for: None once the environment is up, else a
        trigger (the task waits for it in the triggerer) and its timeout in seconds. An environment
        that cannot come up is removed and the error raised."""
        ...

    def smoke_checks(
        self, environment: dict[str, str], *, spec: AppSpec, checks: list[SmokeCheck], version: str
    ) -> list[dict[str, Any]]: ...

    def start_test_command(self, environment: dict[str, str], *, spec: AppSpec, command: list[str]) -> dict[str, Any]:
        """Start the staging test command against the environment's app. Where it ends at once the
        answer holds its `exit_code` and `output`; else `test_command_waiter` names what to wait for."""
        ...

    def test_command_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        """None once the command has ended; else a trigger (the task waits in the triggerer) and its timeout."""
        ...

    def finish_test_command(self, running: dict[str, Any]) -> dict[str, Any]:
        """After a wait: the command's next step, or its `exit_code` and `output` once it has ended."""
        ...

    def describe(self, environment: dict[str, str]) -> str:
        """Where the environment runs, for messages ("instance i-...", "network ...")."""
        ...

    def diagnostics(self, environment: dict[str, str]) -> str:
        """What helps to understand a failed check (the app's last log lines), or ""."""
        ...

    def destroy(self, name: str) -> list[str]: ...


class MetricsClient(Protocol):
    """One gate's connection to the metrics backend, opened once per trigger run (async context)."""

    def query(self, check: dict[str, Any], **labels: str) -> Any:
        """The check's query for this backend, with $app, $region, $color and $window filled in."""
        ...

    async def series(self, query: Any, start: float, end: float, step_s: float) -> list[float]: ...

    async def traffic_gap(self, start: float, end: float) -> str | None:
        """Why [start, end] does not describe the release: the load balancer that carries and counts
        the users' traffic was not serving for part of it (a restart). None when it served throughout."""
        ...

    async def __aenter__(self) -> MetricsClient: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...


class Metrics(Protocol):
    # The field of a spec's metric checks that holds this platform's query ("query", "cloudwatch").
    query_field: str

    def backend(self, app: str, region: str) -> dict[str, Any]:
        """What a trigger needs to open a `MetricsClient` (JSON-able; `metrics_client_for` reads it)."""
        ...

    def timing(self) -> BackendTiming:
        """How often the backend has a point and how late it comes (the gates step and wait by it)."""
        ...


class Links(Protocol):
    def gate_links(
        self,
        *,
        app: str,
        repository: str,
        region: str,
        digest: str,
        queries: list[Any],
        start_at: float,
        duration_s: float,
    ) -> dict[str, str]:
        """The gate's extra links (metrics graph, load balancer, image), by link name."""
        ...


class Platform(Protocol):
    config: PlatformConfig
    images: Images
    environments: Environments
    production: ProductionState
    metrics: Metrics
    links: Links
