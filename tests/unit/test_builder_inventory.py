"""What a builder holds is printed by its own script's SSM command, after the script (one command,
one wait in the triggerer), and read back from that command's output. The shell lines run here as
they run on a builder (both Debian)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from immutable.aws.builders import inventory_of, with_inventory
from immutable.images.inventory import sbom_from_listing


def run(script: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, check=False)


def test_the_inventory_follows_the_script_and_reads_back_apart(tmp_path: Path) -> None:
    packages = tmp_path / "packages.tsv"
    packages.write_text("base-files\t12.4\nlibc6\t2.36\n")
    done = run(with_inventory(["set -eu", "echo built it"], package_list=str(packages)))
    assert done.returncode == 0, done.stderr
    output, listing, package_list = inventory_of(done.stdout)
    assert output == "built it\n"
    assert package_list == packages.read_text()
    assert "--- os\n" in listing and any(line.startswith("bash\t") for line in listing.splitlines())
    sbom = sbom_from_listing(listing, repository="apps/x", digest="1.0.0@run", labels={}, wheel_sha256={})
    assert b'"name": "bash"' in sbom or b'"name":"bash"' in sbom  # dpkg's own packages, as on a builder


def test_a_failed_script_prints_no_inventory_and_an_emulators_output_has_none() -> None:
    done = run(with_inventory(["set -eu", "echo half", "false", "echo never"]))
    assert done.returncode != 0
    assert inventory_of(done.stdout) == ("half\n", "", "")
    assert inventory_of("") == ("", "", "")
