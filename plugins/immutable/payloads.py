"""What the release tasks hand each other through XCom: small typed models, stored as JSON dicts.

Every image is named the same way on every platform: its `repository` and its `digest`, the
platform's immutable id for it (an OCI manifest digest `sha256:...` locally, an AMI id on aws).
Where a runtime fetches it from (a registry reference, a region's AMI copy) is the platform's
business (`Images.uri`), so no payload carries a platform-specific location.

Models accept extra keys: a platform may add its own figures (blobs sent, copy state) to a
report, which the logs and the tests read, and the next task passes on untouched.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict


class Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def of(cls, value: Self | dict[str, Any]) -> Self:
        """The model from an XCom value (a dict) or the model itself."""
        return value if isinstance(value, cls) else cls.model_validate(value)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ImageRef(Payload):
    repository: str
    digest: str  # the platform's immutable id of the image: sha256:... locally, ami-... on aws


class BaseRef(ImageRef):
    """The base image a release is baked on, pinned by digest at validate."""

    version: str
    channel: str


class Plan(Payload):
    app: str
    version: str
    rereleased: bool = False
    ref: str = ""
    note: str = ""
    regions: list[str]
    waves: list[list[str]]
    repository: str
    base: BaseRef
    created: str


class Packaged(Payload):
    """The app's wheel, stored where the bake can fetch it (`artifact`: a URI only its platform reads)."""

    wheel: str
    sha256: str
    dependencies: list[str]
    artifact: str
    revision: str
    source: str


class Baked(ImageRef):
    """A baked image. `pending`: still being made (its labels are read once it is done)."""

    tags: list[str]
    labels: dict[str, str]
    pending: bool = False


class BuiltBase(Payload):
    """A base image built and not yet published: `image_id` is the platform's id for the build."""

    image_id: str
    version: str
    labels: dict[str, str] = {}
    run_id: str = ""
    pending: bool = False  # still being made: waited for in the triggerer, then `finish_base`


class PublishedBase(ImageRef):
    version: str
    reused: bool = False
    sbom: str | None = None  # the digest of the SBOM stored beside it (None: this platform stores none yet)


class RegionCopy(Payload):
    """The release's image in one region: `digest` is the build's id, `image_id` the region's own id
    for it (the same digest locally; the AMI copy's id on aws). `pending`: still copying."""

    region: str
    repository: str = ""
    digest: str = ""
    image_id: str
    copied: bool
    pending: bool = False
    detail: str = ""


class FleetState(Payload):
    """One color's release in one region."""

    color: str
    version: str
    digest: str


class PendingLaunch(Payload):
    """A fleet launched without waiting: the task waits for it in the triggerer, then goes on."""

    region: str
    color: str
    size: int
    started_at: float  # epoch seconds: the launch's timeout counts from here, across resumes


class Launched(Payload):
    region: str
    color: str
    version: str
    digest: str
    previous: FleetState | None
    already_live: bool


class Flipped(Payload):
    region: str
    color: str
    version: str
    digest: str
    previous: FleetState | None
    flipped: bool = False
