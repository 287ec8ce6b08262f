"""The base's network tuning: the drop-in read as systemd-sysctl reads it, the part a container
takes at launch, the base image's check of every key and value, and the AMI check's shell."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from immutable.network_tuning import (
    HOST_WIDE,
    SysctlSyntaxError,
    differences,
    for_container,
    parse_drop_in,
    shipped_network_tuning,
)


def test_the_drop_in_is_read_as_systemd_sysctl_reads_it() -> None:
    text = "# comment\n; also a comment\n\nnet.core.somaxconn = 4096\n-net.ipv4.ip_local_port_range=10240   65000\n"
    assert parse_drop_in(text) == {"net.core.somaxconn": "4096", "net.ipv4.ip_local_port_range": "10240 65000"}
    with pytest.raises(SysctlSyntaxError, match="line 2: expected 'key = value'"):
        parse_drop_in("net.core.somaxconn = 1\nnet.core.somaxconn\n")


def test_a_container_takes_its_network_namespace_settings_and_never_the_hosts() -> None:
    shipped = shipped_network_tuning()
    taken = for_container(shipped)
    assert "net.core.somaxconn" in taken and "net.ipv4.tcp_fin_timeout" in taken
    assert "net.core.netdev_max_backlog" in shipped and "net.core.netdev_max_backlog" not in taken
    assert set(shipped) - set(taken) <= HOST_WIDE
    assert for_container({"kernel.pid_max": "1", "vm.swappiness": "1"}) == {}  # not per container at all


def test_every_key_and_value_is_compared() -> None:
    expected = {"net.core.somaxconn": "4096", "net.ipv4.ip_local_port_range": "10240 65000"}
    assert differences(expected, {"net.core.somaxconn": "4096", "net.ipv4.ip_local_port_range": "10240\t65000"}) == []
    assert differences(expected, {"net.core.somaxconn": "128", "net.ipv4.tcp_tw_reuse": "2"}) == [
        "net.core.somaxconn: 128 (expected 4096)",
        "net.ipv4.ip_local_port_range: missing (expected 10240 65000)",
        "net.ipv4.tcp_tw_reuse: set to 2 but not in the drop-in",
    ]


def test_the_base_image_check_fails_on_one_changed_value() -> None:
    from immutable.images.base import judge_drop_in
    from immutable.paths import BASE_CONTEXT_DIR

    shipped = (BASE_CONTEXT_DIR / "sysctl.d" / "60-immutable-net.conf").read_text()
    passed, detail = judge_drop_in(0, shipped)
    assert passed, detail
    assert detail.endswith(f"all {len(shipped_network_tuning())} settings as shipped")
    passed, detail = judge_drop_in(0, shipped.replace("tcp_fin_timeout = 15", "tcp_fin_timeout = 60"))
    assert not passed and "net.ipv4.tcp_fin_timeout: 60 (expected 15)" in detail, detail
    assert judge_drop_in(1, "cat: /etc/sysctl.d/60-immutable-net.conf: No such file")[0] is False


def run_ami_sysctl_check(tmp_path: Path, kernel: dict[str, str]) -> str:
    """The AMI check's sysctl lines, run by sh with a `sysctl` that answers from `kernel`."""
    from immutable.aws.base_ami import base_checks_script
    from immutable.config import load_base_spec

    lines = base_checks_script(load_base_spec())
    script = [lines[0], lines[1], *[line for line in lines if "wrong" in line]]
    fake = tmp_path / "sysctl"
    table = "\n".join(f"{key}\t{value}" for key, value in kernel.items())
    lookup = 'awk -F"\\t" -v k="$2" \'$1 == k {sub(/^[^\\t]*\\t/, ""); print}\''
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "{table}" | {lookup}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", "\n".join(script)], env=env, capture_output=True, text=True, check=True).stdout


def test_the_ami_check_reads_every_value_the_kernel_applied_at_boot(tmp_path: Path) -> None:
    shipped = shipped_network_tuning()
    booted = {key: value.replace(" ", "\t") for key, value in shipped.items()}  # as the kernel prints them
    assert run_ami_sysctl_check(tmp_path, booted).startswith("PASS sysctl-applied")
    out = run_ami_sysctl_check(tmp_path, booted | {"net.core.somaxconn": "128"})
    assert out.startswith("FAIL sysctl-applied") and "net.core.somaxconn=128(expected 4096)" in out, out
