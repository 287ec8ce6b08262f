from __future__ import annotations

from pathlib import Path

import pytest

from immutable.apt_sources import archive_mirror, host_sources, parse_deb822, parse_one_line, render_for_image

DEB822 = """Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main
"""


def test_deb822_keeps_binary_sources_only() -> None:
    sources = parse_deb822(DEB822)
    assert [s.suites for s in sources] == [("bookworm", "bookworm-updates"), ("bookworm-security",)]
    assert sources[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_one_line_format_with_options() -> None:
    sources = parse_one_line(
        "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib\n# deb http://x y z\n"
    )
    assert len(sources) == 1
    assert sources[0].uris == ("http://m.example/debian",)
    assert sources[0].components == ("main", "contrib")


def test_archive_mirror_is_the_one_serving_the_suite() -> None:
    assert archive_mirror(parse_deb822(DEB822), "bookworm") == "http://mirror.example/debian"
    with pytest.raises(LookupError, match="trixie"):
        archive_mirror(parse_deb822(DEB822), "trixie")


def test_render_for_image_keeps_security_and_updates() -> None:
    text = render_for_image(parse_deb822(DEB822), "bookworm")
    assert "Suites: bookworm bookworm-updates" in text
    assert "Suites: bookworm-security" in text
    assert "deb-src" not in text


def test_host_sources_reads_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://a.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert len(host_sources(tmp_path)) == 3
