"""Every DAG file imports cleanly, without network or connections, and without heavy modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
PROBE = Path(__file__).with_name("parse_probe.py")


def parse(path: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Parse in a fresh interpreter, so only this file's imports are seen."""
    done = subprocess.run(
        [sys.executable, str(PROBE), str(path)],
        capture_output=True,
        text=True,
        env=os.environ | (extra_env or {}),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_there_are_dag_files() -> None:
    assert DAG_FILES, "no DAG files found under dags/"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_cleanly(path: Path) -> None:
    result = parse(path)
    assert result["import_errors"] == {}
    assert result["dag_ids"], f"{path.name} defines no DAG"
    assert result["heavy_modules"] == [], f"{path.name} imports heavy modules at parse time"
    for dag_id, facts in result["dags"].items():
        assert facts["catchup"] is False, dag_id
        assert facts["tags"], dag_id
        assert facts["doc_md"], dag_id
        assert facts["start_date_tz"] in ("UTC", "Timezone('UTC')"), dag_id
        assert facts["tasks_without_doc"] == [], f"{dag_id}: tasks without a doc"


def test_no_plugin_module_shadows_the_standard_library() -> None:
    """Airflow's plugin manager imports every .py file under plugins/ that plugins/.airflowignore does
    not exclude, under its bare name: a file called copy.py would replace the standard library's
    `copy` in every Airflow process. The library (plugins/immutable/) is excluded, so only the
    entry points count."""
    # The function Airflow's plugin manager walks plugins/ with (airflow.utils.file's is its deprecated alias).
    from airflow._shared.module_loading import find_path_from_directory

    loaded = [Path(p) for p in find_path_from_directory(ROOT / "plugins", ".airflowignore") if p.endswith(".py")]
    assert loaded, "Airflow would load no plugin file at all"
    assert not [p for p in loaded if "immutable" in p.relative_to(ROOT / "plugins").parts], loaded
    clashes = [str(path.relative_to(ROOT)) for path in loaded if path.stem in sys.stdlib_module_names]
    assert clashes == [], f"rename these: {clashes}"
