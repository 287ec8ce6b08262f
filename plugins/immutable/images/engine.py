"""One way to reach the Docker engine, with an error that says what to do when it is not there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import docker

MANAGED_LABEL = "io.immutable.managed"  # on every container the project starts, so cleanup finds them


class EngineUnavailable(RuntimeError):
    pass


def docker_client(timeout_s: int = 300) -> docker.DockerClient:
    import docker

    try:
        client = docker.from_env(timeout=timeout_s)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(
            f"no Docker engine answers ({exc}). Start one (`make up` does on Debian as root) or set DOCKER_HOST."
        ) from exc
    return client


def run_in_image(
    client: docker.DockerClient, image: str, command: list[str], *, user: str | None = None, **kwargs: Any
) -> tuple[int, str]:
    """Run a throwaway container; return (exit code, combined output). Always removed."""
    container = client.containers.run(
        image,
        command,
        user=user or "",
        detach=True,
        labels={MANAGED_LABEL: "true", "io.immutable.role": "check"},
        **kwargs,
    )
    try:
        result = container.wait(timeout=600)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return int(result.get("StatusCode", 1)), output
    finally:
        container.remove(force=True)


def read_file_in_image(client: docker.DockerClient, image: str, path: str) -> str | None:
    """One text file of an image, read without running it; None if the image has no such file."""
    import io
    import tarfile

    container = client.containers.create(image, ["true"], labels={MANAGED_LABEL: "true", "io.immutable.role": "check"})
    try:
        try:
            chunks, _ = container.get_archive(path)
        except docker.errors.NotFound:
            return None
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            member = archive.extractfile(archive.getmembers()[0])
            return member.read().decode() if member else None
    finally:
        container.remove(force=True)
