"""What a package is made of names the artifact a release of the same inputs reuses."""

from __future__ import annotations

import io
import tarfile

from immutable.images.app import package_key


def source_tar(files: dict[str, bytes], mtime: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SOURCE = {"src/VERSION": b"1.6.0\n", "src/pyproject.toml": b"[project]\nname = 'x'\n"}
BASE = "sha256:" + "a" * 64


def test_the_same_files_on_the_same_base_have_one_key_whatever_their_times() -> None:
    assert package_key(source_tar(SOURCE, 1), BASE) == package_key(source_tar(SOURCE, 2_000_000_000), BASE)


def test_another_version_file_or_base_is_another_package() -> None:
    key = package_key(source_tar(SOURCE, 1), BASE)
    assert package_key(source_tar(SOURCE | {"src/VERSION": b"1.6.1\n"}, 1), BASE) != key
    assert package_key(source_tar(SOURCE | {"src/extra.py": b""}, 1), BASE) != key
    assert package_key(source_tar(SOURCE, 1), "sha256:" + "b" * 64) != key


def test_the_key_is_a_valid_registry_tag() -> None:
    key = package_key(source_tar(SOURCE, 1), BASE)
    assert key.startswith("src-") and len(key) <= 128 and key.replace("-", "").isalnum()
