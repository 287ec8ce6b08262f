"""The layers of DESIGN.md, enforced: who may import whom, no cycles, no platform-name branches outside
the platform packages and the factory, and Airflow's plugin loader importing only the entry points."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "plugins" / "immutable"

# Layers from the bottom up. A module may import its own layer and the ones below it, except where
# FORBIDDEN says otherwise. The platform packages sit below the interface: the pipelines reach them
# only through `immutable.platforms`.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "pure",
        (
            "analysis",
            "canary_analysis",
            "gates",
            "rollout",
            "base_policy",
            "versioning",
            "config",
            "app_spec",
            "payloads",
            "provenance",
            "naming",
            "paths",
            "apt_sources",
            "assets",
            "sqlite_settings",
            "production_state",
            "smoke",
            "bounded_yaml",
            "yaml_once",
            "validated_once",
            "network_tuning",
            "retention",
            "cve_check",
            "run_timing",
            "sbom",
            "metric_timing",
        ),
    ),
    ("building blocks", ("images", "registry", "signing", "revocation", "ui.links", "security_tracker")),
    ("platform packages", ("local", "aws")),
    ("interface", ("platforms",)),
    ("pipelines", ("pipelines",)),
    (
        "operators and triggers",
        ("operators", "triggers", "ui", "dag_specs", "form_params", "shared_tasks", "stop_listener", "notifications"),
    ),
    ("tools", ("airflow_api", "localctl", "demo", "compose", "compose_stack", "aws_smoke")),
]
FORBIDDEN = {
    # platform packages do not know each other
    "local": ("aws",),
    "aws": ("local",),
    # above the interface nobody names a platform package or its building blocks
    "pipelines": ("local", "aws", "images", "registry", "signing.load_signer"),
    "operators": ("local", "aws", "images", "registry"),
    "triggers": ("local", "aws", "images", "registry"),
}
# The factory (and only it) loads the platform packages, by name from a table, never by import.
PLATFORM_NAME_COMPARISON = re.compile(
    r"""(\.platform|platform_kind|\["kind"\]|\.get\("kind"\))\s*(==|!=|\bin\b)|(==|!=)\s*["'](aws|local|prometheus|cloudwatch)["']"""
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT / "plugins").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every `immutable.*` module the file imports, at any depth (lazy imports count too)."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("immutable")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("immutable"):
            modules = library_modules()
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
    return found


def type_checking_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    found.add(inner.module)
    return found


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the layer's prefix) of an `immutable.*` module."""
    short = module.removeprefix("immutable.").removeprefix("immutable")
    best: tuple[int, str] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (short == prefix or short.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (index, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/unit/test_architecture.py; place it in one")
    return best


def test_every_library_module_has_a_layer() -> None:
    for module in library_modules():
        if module != "immutable":
            layer_of(module)


@pytest.mark.parametrize("module", sorted(m for m in library_modules() if m != "immutable"))
def test_imports_follow_the_layers(module: str) -> None:
    path = library_modules()[module]
    own_layer, own_prefix = layer_of(module)
    typing_only = type_checking_imports(path)
    wrong = []
    for imported in sorted(imports_of(path)):
        if imported == "immutable" or imported in typing_only:
            continue
        layer, _ = layer_of(imported)
        short = imported.removeprefix("immutable.")
        forbidden = FORBIDDEN.get(own_prefix.split(".")[0], ())
        if layer > own_layer:
            wrong.append(f"{imported} ({LAYERS[layer][0]}) is above {module} ({LAYERS[own_layer][0]})")
        elif any(short == f or short.startswith(f + ".") for f in forbidden):
            wrong.append(f"{imported} may not be imported by {own_prefix}")
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_cycle() -> None:
    modules = library_modules()
    graph = {
        m: {i for i in imports_of(p) - type_checking_imports(p) if i in modules and i != m} for m, p in modules.items()
    }
    # a package's __init__ is imported by its own modules' import; that is not a cycle of ours
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join([*visiting[visiting.index(module) :], module])
        visiting.append(module)
        for dependency in sorted(graph[module]):
            visit(dependency)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_platform_name_is_compared_outside_the_platform_packages() -> None:
    allowed = (LIBRARY / "local", LIBRARY / "aws", LIBRARY / "platforms" / "factory.py")
    files = [*LIBRARY.rglob("*.py"), *(ROOT / "dags").glob("*.py")]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if not any(path == a or a in path.parents for a in allowed)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PLATFORM_NAME_COMPARISON.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_comparison_check_can_fail() -> None:
    assert PLATFORM_NAME_COMPARISON.search('if platform.platform == "aws":')
    assert PLATFORM_NAME_COMPARISON.search('if backend["kind"] == "prometheus":')
    assert not PLATFORM_NAME_COMPARISON.search("platform = platform_for(config)")


def test_airflow_loads_only_the_plugin_entry_points_and_the_library_once() -> None:
    """Airflow's plugin loader imports every .py under plugins/ by its bare name; with the library
    ignored (plugins/.airflowignore) no library module gets a second name such as `base` or `release`."""
    probe = """
import json, sys
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
import immutable.pipelines.release, immutable.platforms
root = sys.argv[1]
names = {}
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None) or ""
    if path.startswith(root):
        names.setdefault(path, []).append(name)
print(json.dumps(names))
"""
    env = os.environ | {"AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins")}
    out = subprocess.run(
        [sys.executable, "-c", probe, str(LIBRARY)], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    names = json.loads(out.stdout.strip().splitlines()[-1])
    assert names, "the probe imported no library module; it checks nothing"
    twice = {path: found for path, found in names.items() if len(found) > 1}
    bare = {path: found for path, found in names.items() if any(not n.startswith("immutable") for n in found)}
    assert not twice and not bare, f"imported under two names: {twice or bare}"
