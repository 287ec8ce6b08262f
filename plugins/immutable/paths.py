"""Where the project's files are, whether run from the repo or from a container mount."""

from __future__ import annotations

import os
from pathlib import Path

# plugins/immutable/paths.py -> the project root holds dags/, plugins/ and include/.
PROJECT_ROOT = Path(os.environ.get("IMMUTABLE_PROJECT_ROOT", Path(__file__).resolve().parents[2]))
INCLUDE_DIR = PROJECT_ROOT / "include"
BASE_CONTEXT_DIR = INCLUDE_DIR / "base"
BASE_SPEC_FILE = BASE_CONTEXT_DIR / "base.yaml"
PLATFORM_FILE = Path(os.environ.get("IMMUTABLE_PLATFORM_FILE", INCLUDE_DIR / "platform.yaml"))
APPS_DIR = INCLUDE_DIR / "apps"


def apps_dir() -> Path:
    """$IMMUTABLE_APPS_DIR read at call time (a test adds an app to a running platform), else include/apps."""
    configured = os.environ.get("IMMUTABLE_APPS_DIR")
    return Path(configured) if configured else APPS_DIR
