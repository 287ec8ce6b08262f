"""Each YAML file's text parsed once per change, not once per DAG parse.

The dag-processor parses `dags/releases.py` every few minutes in a fresh process, and each parse
read every app spec through the hostile-input checks of `bounded_yaml` (a scan of the text, libyaml,
a walk of the node graph): most of the time spent on specs with hundreds of apps. A document
parsed once is kept as JSON under the project's `var/cache/yaml/`, named by the SHA-256 of the
text it came from, so a changed file is parsed again and an unchanged one is read back. The
document is still validated (pydantic) on every read: only the parse is remembered. A document
JSON cannot hold as it is (dates, non-string keys) is simply parsed each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from immutable.bounded_yaml import parse_bounded_yaml, read_bounded_text
from immutable.paths import PROJECT_ROOT

CACHE_DIR = Path(os.environ.get("IMMUTABLE_CACHE_DIR", PROJECT_ROOT / "var" / "cache")) / "yaml"


def load_yaml_once(path: Path) -> object:
    """The file's document, as `bounded_yaml.load_bounded_yaml` gives it (and refuses it)."""
    text = read_bounded_text(path)
    kept = CACHE_DIR / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    try:
        return json.loads(kept.read_text())
    except (OSError, ValueError):  # not parsed yet, or unreadable: parse it
        pass
    document = parse_bounded_yaml(text, str(path))
    _keep(kept, document)
    return document


def _keep(kept: Path, document: object) -> None:
    """Write the document where the next parse finds it, whole or not at all; a cache that cannot be
    written (a read-only checkout) only costs the next parse its time."""
    try:
        dumped = json.dumps(document)
    except (TypeError, ValueError):
        return
    if json.loads(dumped) != document:  # JSON would change it (a non-string key): never keep
        return
    write_cache_file(kept, dumped.encode())


def write_cache_file(target: Path, data: bytes) -> None:
    """`data` at `target`, whole or not at all (a file beside it, then renamed), for the next parse to
    find; a cache that cannot be written (a read-only checkout) only costs the next parse its time."""
    written: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=target.parent, suffix=".tmp", delete=False) as out:
            written = Path(out.name)
            out.write(data)
        written.replace(target)
    except OSError:
        if written is not None:
            written.unlink(missing_ok=True)
