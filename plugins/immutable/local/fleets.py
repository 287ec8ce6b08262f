"""App fleets on the local platform: containers per app, region and color, behind the region's LB.

Names and labels are deterministic (`<instance>-<app>-<region>-<color>-<n>`; labels platform
instance, app, region, color, version, digest), so every step can look before it acts and a
retry never makes a second fleet.
What runs where is read back from the containers' labels: they are the truth.

The load balancer, the health checks and Prometheus reach a member at its address on Docker's
bridge, not through a published port: with the engine's live-restore, that address keeps
answering while the engine restarts (published ports are NAT rules the engine rebuilds as it
starts, and requests sent in that instant fail).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from immutable.app_spec import AppSpec
from immutable.config import PlatformConfig
from immutable.images.engine import MANAGED_LABEL, docker_client, read_file_in_image
from immutable.network_tuning import SYSCTL_FILE, for_container, parse_drop_in
from immutable.provenance import LABEL_APP

log = logging.getLogger(__name__)

LABEL_INSTANCE = "io.immutable.platform"
LABEL_REGION = "io.immutable.region"
LABEL_COLOR = "io.immutable.color"
LABEL_VERSION = "io.immutable.version"
LABEL_DIGEST = "io.immutable.digest"
LABEL_ROLE = "io.immutable.role"
LABEL_PORT = "io.immutable.port"  # the port the app listens on inside the container
COLORS = ("blue", "green", "canary", "baseline")
HEALTH_POLL_S = 0.5  # seconds between health probes of a starting member


class FleetError(RuntimeError):
    pass


_TUNING_BY_DIGEST: dict[str, dict[str, str]] = {}  # an image's content never changes under its digest


def network_tuning(client: Any, image: str, digest: str) -> dict[str, str]:
    """The image's own network tuning (its base's sysctl drop-in), the part a container can take: set
    at launch, as a VM applies the whole drop-in at boot. The host-wide rest stays the host's. Read
    once per digest in a process (each read starts a container)."""
    if digest not in _TUNING_BY_DIGEST:
        _TUNING_BY_DIGEST[digest] = _read_network_tuning(client, image)
    return dict(_TUNING_BY_DIGEST[digest])


def _read_network_tuning(client: Any, image: str) -> dict[str, str]:
    text = read_file_in_image(client, image, SYSCTL_FILE)
    if text is None:
        log.warning("%s has no %s: its fleet runs with the kernel's network defaults", image, SYSCTL_FILE)
        return {}
    settings = parse_drop_in(text)
    taken = for_container(settings)
    left = sorted(set(settings) - set(taken))
    log.info(
        "network tuning from %s: %d setting(s) at launch; host-wide ones left to the host: %s",
        SYSCTL_FILE,
        len(taken),
        left,
    )
    return taken


@dataclass(frozen=True)
class Member:
    name: str
    color: str
    address: str  # on Docker's bridge network, reachable from this machine
    port: int  # the app's port at that address
    version: str
    digest: str
    status: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def member_name(instance: str, app: str, region: str, color: str, index: int) -> str:
    return f"{instance}-{app}-{region}-{color}-{index}"


def server_name(color: str, index: int) -> str:
    """The member's name in the load balancer: `<color>-<n>`, which the LB groups shares by."""
    return f"{color}-{index}"


class LocalFleets:
    def __init__(self, platform: PlatformConfig, state_dir: Path) -> None:
        self.platform = platform
        self.state_dir = state_dir

    def _lb(self, region: str) -> Any:
        from immutable.local.loadbalancer import LoadBalancer

        return LoadBalancer(self.platform.region(region), self.state_dir)

    def members(self, app: str, region: str, color: str | None = None) -> list[Member]:
        client = docker_client()
        filters = [
            f"{LABEL_INSTANCE}={self.platform.local.instance}",
            f"{LABEL_APP}={app}",
            f"{LABEL_REGION}={region}",
            f"{LABEL_ROLE}=fleet",
        ]
        if color:
            filters.append(f"{LABEL_COLOR}={color}")
        found = []
        for container in client.containers.list(all=True, ignore_removed=True, filters={"label": filters}):
            labels = container.labels
            networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
            address = next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), "")
            found.append(
                Member(
                    name=container.name,
                    color=labels[LABEL_COLOR],
                    address=address,
                    port=int(labels.get(LABEL_PORT, 0)),
                    version=labels.get(LABEL_VERSION, ""),
                    digest=labels.get(LABEL_DIGEST, ""),
                    status=container.status,
                )
            )
        return sorted(found, key=lambda m: m.name)

    def launch(
        self,
        *,
        spec: AppSpec,
        region: str,
        color: str,
        image: str,
        digest: str,
        version: str,
        size: int,
        wait: bool = True,
    ) -> list[Member]:
        """Start `size` members on `image`, wait until each is healthy, add them to the LB at weight 0.

        Members that already exist on the same digest are kept (a retry); on another digest the
        color is taken, which is an error: that fleet must be destroyed first. A container is
        healthy within seconds, so this waits whatever `wait` says (`pending_launch` is then None).
        """
        import docker

        if color not in COLORS:
            raise FleetError(f"unknown color '{color}'; colors are {COLORS}")
        client = docker_client()
        existing = {m.name: m for m in self.members(spec.name, region, color)}
        clash = [m.name for m in existing.values() if m.digest != digest]
        if clash:
            raise FleetError(
                f"{spec.name} in {region}: the {color} fleet runs another image ({clash}); remove it before "
                f"launching {digest} as {color}"
            )
        client.images.pull(image)
        tuning = network_tuning(client, image, digest)
        for index in range(1, size + 1):
            name = member_name(self.platform.local.instance, spec.name, region, color, index)
            if name in existing and existing[name].status == "running":
                continue
            if name in existing:
                client.containers.get(name).remove(force=True)
            try:
                client.containers.run(
                    image,
                    name=name,
                    detach=True,
                    environment={**spec.runtime.env, "PORT": str(spec.runtime.port)},
                    sysctls=tuning,
                    labels={
                        MANAGED_LABEL: "true",
                        LABEL_INSTANCE: self.platform.local.instance,
                        LABEL_APP: spec.name,
                        LABEL_REGION: region,
                        LABEL_COLOR: color,
                        LABEL_VERSION: version,
                        LABEL_DIGEST: digest,
                        LABEL_ROLE: "fleet",
                        LABEL_PORT: str(spec.runtime.port),
                    },
                )
            except docker.errors.APIError as exc:
                raise FleetError(f"could not start {name} from {image}: {exc.explanation}") from exc
        members = self.members(spec.name, region, color)
        self.wait_healthy(spec, members)
        lb = self._lb(region)
        lb.ensure_app(spec.name, spec.runtime.health_path)  # an app added since the load balancer started
        for index, member in enumerate(members, start=1):
            lb.add_server(spec.name, server_name(color, index), member.address, member.port)
        self._publish_targets(spec.name, region, color, members)
        log.info("%s %s %s: %d member(s) healthy on %s", spec.name, region, color, len(members), digest)
        return members

    def pending_launch(
        self, *, spec: AppSpec, region: str, color: str, size: int, started_at: float
    ) -> tuple[Any, float] | None:
        """Nothing: `launch` has waited until every member was healthy."""
        return None

    def pending_healthy(self, spec: AppSpec, members: list[Member], *, since: float) -> tuple[Any, float] | None:
        """Nothing for a triggerer: a container answers its health check within seconds, waited for here."""
        self.wait_healthy(spec, members)
        return None

    def wait_healthy(self, spec: AppSpec, members: list[Member]) -> None:
        import httpx

        deadline = time.monotonic() + spec.health.timeout_s
        pending = {m.name: m for m in members}
        last: dict[str, str] = {}
        while pending and time.monotonic() < deadline:
            for name, member in list(pending.items()):
                try:
                    response = httpx.get(f"http://{member.address}:{member.port}{spec.runtime.health_path}", timeout=2)
                    last[name] = f"HTTP {response.status_code}"
                    if response.status_code == 200:
                        del pending[name]
                except httpx.HTTPError as exc:
                    last[name] = str(exc) or type(exc).__name__
            if pending:
                time.sleep(HEALTH_POLL_S)
        if pending:
            raise FleetError(
                f"{len(pending)} member(s) never became healthy within {spec.health.timeout_s:.0f}s: "
                + ", ".join(f"{n} ({last.get(n, 'no answer')})" for n in pending)
            )

    def destroy(self, app: str, region: str, color: str, *, force: bool = False) -> list[str]:
        """Take the color out of the LB (drained first), then remove its containers. Idempotent.

        `force` allows removing the color that carries the app's last traffic in the region (a
        first release that failed: the region goes back to running nothing of the app).
        """
        lb = self._lb(region)
        members = self.members(app, region, color)
        from immutable.local.loadbalancer import LoadBalancerError

        for server in lb.servers(app):
            if server.name.startswith(f"{color}-"):
                try:
                    lb.remove_server(app, server.name, force=force)
                except LoadBalancerError:
                    if lb.server(app, server.name) is not None:
                        raise  # still there: a real failure, not a concurrent removal
        self._remove_targets(app, region, color)
        import docker

        client = docker_client()
        for member in members:
            try:
                client.containers.get(member.name).remove(force=True)
            except docker.errors.APIError as exc:
                # 404 gone, 409 removal already in progress: a concurrent cleanup (the canary's
                # teardown and the rollback) got there first, which is what we wanted.
                if exc.status_code not in (404, 409):
                    raise
        if members:
            log.info("%s %s: removed the %s fleet (%s)", app, region, color, ", ".join(m.name for m in members))
        return [m.name for m in members]

    def _publish_targets(self, app: str, region: str, color: str, members: list[Member]) -> None:
        from immutable.local.prometheus import write_targets

        if not members:
            return
        write_targets(
            self.state_dir,
            app,
            region,
            color,
            [(m.address, m.port) for m in members],
            {"version": members[0].version, "digest": members[0].digest},
        )

    def _remove_targets(self, app: str, region: str, color: str) -> None:
        from immutable.local.prometheus import remove_targets

        remove_targets(self.state_dir, app, region, color)
