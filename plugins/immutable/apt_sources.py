"""Read the machine's own apt sources so that builds use its mirror, never a hard-coded host."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class AptSource:
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_deb822(text: str) -> list[AptSource]:
    """Parse a .sources file (deb822 stanzas separated by blank lines; comments ignored)."""
    sources: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#") or line.startswith((" ", "\t")):
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or "uris" not in fields:
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        sources.append(
            AptSource(
                uris=tuple(fields["uris"].split()),
                suites=tuple(fields.get("suites", "").split()),
                components=tuple(fields.get("components", "main").split()),
                signed_by=fields.get("signed-by"),
            )
        )
    return sources


def parse_one_line(text: str) -> list[AptSource]:
    """Parse the classic `deb [options] URI suite component...` format."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        parts = line.split()[1:]
        if parts and parts[0].startswith("["):
            while parts and not parts[0].endswith("]"):
                parts.pop(0)
            parts.pop(0)
        if len(parts) >= 2:
            sources.append(AptSource(uris=(parts[0],), suites=(parts[1],), components=tuple(parts[2:]) or ("main",)))
    return sources


def host_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    found: list[AptSource] = []
    main_list = apt_dir / "sources.list"
    if main_list.exists():
        found += parse_one_line(main_list.read_text())
    parts_dir = apt_dir / "sources.list.d"
    if parts_dir.is_dir():
        for path in sorted(parts_dir.iterdir()):
            if path.suffix == ".sources":
                found += parse_deb822(path.read_text())
            elif path.suffix == ".list":
                found += parse_one_line(path.read_text())
    return found


def archive_mirror(sources: list[AptSource], suite: str) -> str:
    """The mirror serving `suite` itself (not -security/-updates), for debootstrap."""
    for source in sources:
        if suite in source.suites:
            return source.uris[0]
    raise LookupError(
        f"no apt source on this machine serves suite '{suite}'; add a Debian mirror to /etc/apt/sources.list"
    )


def render_for_image(sources: list[AptSource], suite: str) -> str:
    """deb822 text for an image of `suite`: the host's mirrors, the image's suite names."""
    stanzas = []
    for source in sources:
        suites = [s for s in source.suites if s == suite or s.startswith(f"{suite}-")]
        if not suites:
            continue
        lines = [
            "Types: deb",
            f"URIs: {' '.join(source.uris)}",
            f"Suites: {' '.join(suites)}",
            f"Components: {' '.join(source.components)}",
        ]
        if source.signed_by:
            lines.append(f"Signed-By: {source.signed_by}")
        stanzas.append("\n".join(lines))
    if not stanzas:
        raise LookupError(f"no apt source on this machine serves suite '{suite}' or its updates")
    return "\n\n".join(stanzas) + "\n"
