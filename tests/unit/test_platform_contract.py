"""Every platform the factory knows implements the whole interface, with the interface's signatures.

mypy checks the same statically (each platform package declares `type[Platform]` conformance);
this test runs for every entry of the factory's table, so a new platform is held to it at once.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from immutable.config import PlatformConfig
from immutable.platforms import factory, interface

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CONFIGS = {"local": ROOT / "tests" / "platform.yaml", "aws": ROOT / "include" / "aws" / "platform.yaml"}
PARTS = {
    "images": interface.Images,
    "environments": interface.Environments,
    "metrics": interface.Metrics,
    "links": interface.Links,
}


def protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if callable(member) and not name.startswith("_")
    }


def parameters(signature: inspect.Signature) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in signature.parameters.values()]


def test_every_platform_has_a_sample_config() -> None:
    assert set(SAMPLE_CONFIGS) == set(factory.PLATFORMS)


@pytest.mark.parametrize("name", sorted(factory.PLATFORMS))
def test_the_platform_implements_every_part_of_the_interface(name: str) -> None:
    config = PlatformConfig.model_validate(yaml.safe_load(SAMPLE_CONFIGS[name].read_text()))
    assert config.platform == name
    platform = factory.platform_for(config)
    assert platform.config is config
    missing, different = [], []
    for part, protocol in PARTS.items():
        implementation = getattr(platform, part)
        for method, wanted in protocol_methods(protocol).items():
            found = getattr(implementation, method, None)
            if found is None:
                missing.append(f"{part}.{method}")
            elif parameters(inspect.signature(found)) != parameters(wanted)[1:]:  # without `self`
                different.append(f"{part}.{method}{inspect.signature(found)} != {wanted}")
    assert isinstance(platform.metrics.query_field, str) and platform.metrics.query_field
    for method in ("live", "kept", "set_shares", "acquire", "release", "note_flip", "record"):
        assert callable(getattr(platform.production, method)), method
    assert not missing and not different, "\n".join(missing + different)


@pytest.mark.parametrize("name", sorted(factory.METRICS_CLIENTS))
def test_every_metrics_client_renders_queries_and_is_an_async_context(name: str) -> None:
    client_class = factory._load(factory.METRICS_CLIENTS, name, "metrics backend")
    for method in ("query", "series", "__aenter__", "__aexit__"):
        assert callable(getattr(client_class, method, None)), f"{name}: {method}"
    assert inspect.iscoroutinefunction(client_class.series)
