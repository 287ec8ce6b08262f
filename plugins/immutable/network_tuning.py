"""The base's network tuning (include/base/sysctl.d): what it sets, and which of it a container can take.

Pure but for reading the shipped drop-in. A VM image applies the whole drop-in at boot
(systemd-sysctl). A container shares the host's kernel: only the settings that live in its own
network namespace can be set for it, at launch (Docker's `sysctls`); the rest belong to the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from immutable.paths import BASE_CONTEXT_DIR

DROP_IN_NAME = "60-immutable-net.conf"
SYSCTL_FILE = f"/etc/sysctl.d/{DROP_IN_NAME}"

# net.* settings that exist only in the host's (initial) network namespace: a container's
# namespace has no such file, and Docker refuses to start a container asked to set one (measured
# on the machines' 6.x kernels: "open /proc/sys/net/core/netdev_max_backlog: no such file").
HOST_WIDE = frozenset(
    {
        "net.core.netdev_max_backlog",
        "net.core.netdev_budget",
        "net.core.netdev_budget_usecs",
        "net.core.dev_weight",
        "net.core.rmem_default",
        "net.core.rmem_max",
        "net.core.wmem_default",
        "net.core.wmem_max",
        "net.core.optmem_max",
    }
)


class SysctlSyntaxError(ValueError):
    pass


def parse_drop_in(text: str) -> dict[str, str]:
    """`key = value` lines, as systemd-sysctl reads them: comments and blank lines skipped, runs of
    whitespace in a value made one space (the kernel prints "10240\\t65000" for "10240 65000")."""
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SysctlSyntaxError(f"line {number}: expected 'key = value', got {raw!r}")
        settings[key.strip().lstrip("-")] = normalize(value)
    return settings


def shipped_network_tuning(context_dir: Path = BASE_CONTEXT_DIR) -> dict[str, str]:
    """What the base's build context ships in sysctl.d: what every base image must carry, key by key."""
    return parse_drop_in((context_dir / "sysctl.d" / DROP_IN_NAME).read_text())


def normalize(value: str) -> str:
    return " ".join(value.split())


def for_container(settings: Mapping[str, str]) -> dict[str, str]:
    """The settings a container takes at launch: its own network namespace's, never the host's."""
    return {key: value for key, value in settings.items() if key.startswith("net.") and key not in HOST_WIDE}


def differences(expected: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    """One line per key whose value is not the expected one (or missing), and per unexpected key."""
    lines = [
        f"{key}: {found.get(key, 'missing')} (expected {value})"
        for key, value in expected.items()
        if normalize(found.get(key, "")) != normalize(value)
    ]
    return lines + [f"{key}: set to {found[key]} but not in the drop-in" for key in found if key not in expected]


def proc_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")
