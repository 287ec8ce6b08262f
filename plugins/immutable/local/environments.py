"""Short-lived test environments (dev, staging) on the Docker engine: an isolated network, the app
container, and probe containers that talk to it over that network.

Everything is named from the app, the environment and the run, and labelled, so teardown finds
it all even after a worker restart, and a retry reuses rather than duplicates.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from immutable.app_spec import AppSpec, SmokeCheck
from immutable.images.engine import MANAGED_LABEL, docker_client
from immutable.naming import environment_name as environment_name  # re-exported: tests find an environment by it
from immutable.smoke import PROBE_SCRIPT, probe_config

if TYPE_CHECKING:
    from immutable.local.images import LocalImages
    from immutable.payloads import ImageRef

log = logging.getLogger(__name__)

ENV_LABEL = "io.immutable.env"
APP_ALIAS = "app"  # the app's host name inside the environment's network


class EnvironmentError_(RuntimeError):
    pass


@dataclass(frozen=True)
class Environment:
    name: str
    image: str
    url: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "image": self.image, "url": self.url}


def create(*, name: str, spec: AppSpec, image: str, env: dict[str, str]) -> Environment:
    """Network and app container; on any failure what was made is removed before raising."""
    import docker

    client = docker_client()
    labels = {MANAGED_LABEL: "true", ENV_LABEL: name, "io.immutable.app.name": spec.name}
    try:
        networks = client.networks.list(names=[name])
        network = (
            networks[0] if networks else client.networks.create(name, driver="bridge", internal=True, labels=labels)
        )
        try:
            client.containers.get(f"{name}-app")
        except docker.errors.NotFound:
            client.containers.run(
                image,
                name=f"{name}-app",
                detach=True,
                environment={**spec.runtime.env, **env, "PORT": str(spec.runtime.port)},
                labels=labels | {"io.immutable.role": "app"},
                network=network.name,
                networking_config={network.name: client.api.create_endpoint_config(aliases=[APP_ALIAS])},
            )
    except Exception:
        destroy(name)
        raise
    return Environment(name=name, image=image, url=f"http://{APP_ALIAS}:{spec.runtime.port}")


def _probe(environment: Environment, command: list[str], *, env: dict[str, str] | None = None) -> tuple[int, str]:
    client = docker_client()
    container = client.containers.create(
        environment.image,
        command,
        network=environment.name,
        environment=env or {},
        labels={MANAGED_LABEL: "true", ENV_LABEL: environment.name, "io.immutable.role": "probe"},
    )
    try:
        container.start()
        result = container.wait(timeout=1800)
        return int(result.get("StatusCode", 1)), container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def smoke_checks(
    environment: Environment, *, spec: AppSpec, checks: list[SmokeCheck], version: str
) -> list[dict[str, Any]]:
    config = probe_config(environment.url, spec=spec, checks=checks, version=version)
    code, output = _probe(environment, ["python3", "-c", PROBE_SCRIPT, json.dumps(config)])
    if code != 0:
        raise EnvironmentError_(f"the probe container failed (exit {code}): {output[-1000:]}")
    return list(json.loads(output.strip().splitlines()[-1]))


def run_test_command(environment: Environment, command: list[str]) -> tuple[int, str]:
    return _probe(environment, [part.replace("{url}", environment.url) for part in command])


def app_logs(environment: Environment, tail: int = 40) -> str:
    import docker

    try:
        container = docker_client().containers.get(f"{environment.name}-app")
    except docker.errors.NotFound:
        return "(the app container is gone)"
    return str(container.logs(tail=tail).decode(errors="replace"))


def destroy(name: str) -> list[str]:
    """Remove every container and the network of environment `name`; returns what was removed."""
    client = docker_client()
    removed = []
    for container in client.containers.list(all=True, ignore_removed=True, filters={"label": f"{ENV_LABEL}={name}"}):
        container.remove(force=True)
        removed.append(f"container {container.name}")
    for network in client.networks.list(names=[name]):
        if network.name == name:
            network.remove()
            removed.append(f"network {network.name}")
    return removed


def leftovers(name: str) -> list[str]:
    client = docker_client()
    found = [
        c.name for c in client.containers.list(all=True, ignore_removed=True, filters={"label": f"{ENV_LABEL}={name}"})
    ]
    found += [n.name for n in client.networks.list(names=[name]) if n.name == name]
    return found


class LocalEnvironments:
    """`interface.Environments` on the Docker engine: the environment's dict is `Environment.as_dict()`,
    so a later task (or a retry on another worker) rebuilds it from XCom alone."""

    def __init__(self, images: LocalImages) -> None:
        self.images = images

    def create(
        self, *, kind: str, name: str, spec: AppSpec, image: ImageRef, run_id: str, wait: bool = True
    ) -> dict[str, str]:
        """The environment's network and container; a container starts in seconds, so whatever
        `wait` says, nothing is left to wait for (the tests wait for its health)."""
        settings = spec.dev if kind == "dev" else spec.staging
        ref = self.images.uri(None, image.repository, image.digest)
        return create(name=name, spec=spec, image=ref, env=dict(settings.env)).as_dict()

    def pending_create(self, environment: dict[str, str]) -> tuple[Any, float] | None:
        return None

    def smoke_checks(
        self, environment: dict[str, str], *, spec: AppSpec, checks: list[SmokeCheck], version: str
    ) -> list[dict[str, Any]]:
        return smoke_checks(_environment(environment), spec=spec, checks=checks, version=version)

    def start_test_command(self, environment: dict[str, str], *, spec: AppSpec, command: list[str]) -> dict[str, Any]:
        """A container on the environment's network: it ends in seconds, so it is run to its end here."""
        code, output = run_test_command(_environment(environment), command)
        return {"exit_code": code, "output": output}

    def test_command_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        return None

    def finish_test_command(self, running: dict[str, Any]) -> dict[str, Any]:
        return running

    def describe(self, environment: dict[str, str]) -> str:
        return f"network {environment['name']}"

    def diagnostics(self, environment: dict[str, str]) -> str:
        return "app container log (last lines):\n" + app_logs(_environment(environment))

    def destroy(self, name: str) -> list[str]:
        return destroy(name)


def _environment(environment: dict[str, str]) -> Environment:
    return Environment(name=environment["name"], image=environment["image"], url=environment["url"])
