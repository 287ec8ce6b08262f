"""Each file's validated model kept across parses, validated again only when the file changes.

The dag-processor parses `dags/releases.py` (and the other DAG files that list the apps) every few
minutes in a fresh process, and each parse validated every app spec with pydantic: with hundreds of
apps, about 70 ms of CPU per file and parse for specs that had not changed. A folder's validated
models are kept in one file under the project's `var/cache/validated/`, each with the file's
modification time (ns) and size when it was read, as Python's own bytecode cache decides whether a
source changed; an entry whose file no longer matches is validated again. The cache is named by the
folder and by this package's code and pydantic's version, so a changed model never reads an old
entry. It holds pickled models: it is written and read by the same user who runs the code beside it
in `plugins/`, and one that cannot be read is simply validated anew.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any, Generic, TypeVar

import pydantic

from immutable.paths import PROJECT_ROOT
from immutable.yaml_once import write_cache_file

CACHE_DIR = Path(os.environ.get("IMMUTABLE_CACHE_DIR", PROJECT_ROOT / "var" / "cache")) / "validated"
PACKAGE = Path(__file__).resolve().parent

Model = TypeVar("Model")
FileKey = tuple[int, int]  # (modification time in ns, size)


def file_key(path: Path) -> FileKey:
    found = path.stat()
    return found.st_mtime_ns, found.st_size


def code_fingerprint() -> str:
    """This package's modules and pydantic's version as they are now: a changed validator, default or
    field makes every entry validate anew."""
    digest = hashlib.sha256(pydantic.VERSION.encode())
    for module in sorted(PACKAGE.rglob("*.py")):
        found = module.stat()
        digest.update(f"{module.relative_to(PACKAGE)}:{found.st_mtime_ns}:{found.st_size};".encode())
    return digest.hexdigest()


class ValidatedOnce(Generic[Model]):
    """The validated models of one folder's files, read once; `save` writes back what changed."""

    def __init__(self, folder: Path, kind: str) -> None:
        name = hashlib.sha256(f"{kind}\0{folder.resolve()}\0{code_fingerprint()}".encode()).hexdigest()[:32]
        self.file = CACHE_DIR / f"{kind}-{name}.pickle"
        self.kept: dict[str, tuple[FileKey, Model]] = self._read()
        self.now: dict[str, tuple[FileKey, Model]] = {}

    def _read(self) -> dict[str, tuple[FileKey, Any]]:
        try:
            kept = pickle.loads(self.file.read_bytes())
        except Exception:  # not written yet, or unreadable in any way: validate everything anew
            return {}
        return kept if isinstance(kept, dict) else {}

    def lookup(self, path: Path) -> tuple[FileKey, Model | None]:
        """The file's key as it is now, and its model if it was validated as it is now."""
        key = file_key(path)
        entry = self.kept.get(path.name)
        return key, entry[1] if entry is not None and entry[0] == key else None

    def keep(self, path: Path, key: FileKey, model: Model) -> None:
        """`model` validated from `path` as it was at `key` (taken before reading it: a file changed
        while it was read has another key by the next parse, and is validated again)."""
        self.now[path.name] = (key, model)

    def save(self) -> None:
        """Write the models kept this time (files gone or failing are left out), whole or not at all
        (`write_cache_file`)."""
        if self.now.keys() == self.kept.keys() and all(self.now[n][1] is self.kept[n][1] for n in self.now):
            return  # every model came from the cache
        try:
            data = pickle.dumps(self.now, protocol=pickle.HIGHEST_PROTOCOL)
        except pickle.PicklingError:
            return
        write_cache_file(self.file, data)
