"""The worst inputs we can construct, on every surface: app specs, platform.yaml, base.yaml and the
trigger forms. Each is refused with a short message naming the file (or form) and the field, before
anything is built; a bad app spec never hides the others.

Each refusal runs under a hard deadline (`refused_within`), a guard against a hang or a runaway
expansion rather than a speed measurement: bench/hostile_input.py prints how long each takes and
how much memory it needs.
"""

from __future__ import annotations

import copy
import signal
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from immutable.app_spec import load_app_spec, load_app_specs, parse_release_params
from immutable.bounded_yaml import MAX_FILE_BYTES, MAX_MESSAGE_CHARS
from immutable.config import BaseImageSpec, ConfigError, load_base_spec, load_platform, parse_base_params

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "include" / "apps" / "sample.yaml").read_text())
BASE = yaml.safe_load((ROOT / "include" / "base" / "base.yaml").read_text())
PLATFORM = yaml.safe_load((ROOT / "tests" / "platform.yaml").read_text())
HANG_GUARD_S = 10  # far above any real refusal (milliseconds); only a hang or a blow-up reaches it

BILLION_LAUGHS = "\n".join(
    ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["name: sample"]
)
SHELL_AND_PATH = ["x; rm -rf /", "$(reboot)", "`id`", "a|b", "../../etc/passwd", "a\nb", "a b", "x\x00y", "'q'"]


@contextmanager
def refused_within(seconds: int = HANG_GUARD_S) -> Generator[None]:
    def expired(*_: object) -> None:
        raise AssertionError(f"not refused within {seconds}s: a hang or an expansion got through")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refusal(load: Callable[[Path], Any], path: Path) -> str:
    with refused_within(), pytest.raises(ConfigError) as raised:
        load(path)
    message = str(raised.value)
    assert len(message) <= MAX_MESSAGE_CHARS, f"{len(message)} characters"
    assert path.name in message, message
    return message


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def with_value(document: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """A copy of `document` with the dotted `field` (list indexes as numbers) set to `value`."""
    changed = copy.deepcopy(document)
    *parents, last = [int(p) if p.isdigit() else p for p in field.split(".")]
    target: Any = changed
    for part in parents:
        target = target[part]
    target[last] = value
    return changed


# --- the document itself --------------------------------------------------------------------


def test_a_huge_file_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "sample.yaml", "name: sample\nnote: " + "x" * (4 * MAX_FILE_BYTES) + "\n")
    message = refusal(load_app_spec, path)
    assert f"may have at most {MAX_FILE_BYTES}" in message


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    message = refusal(load_app_spec, write(tmp_path / "sample.yaml", BILLION_LAUGHS))
    assert "expands to more than" in message


@pytest.mark.parametrize(
    ("style", "text"),
    [
        ("flow", "name: " + "[" * 50_000 + "]" * 50_000),
        ("flow mappings", "name: " + "{a: " * 20_000 + "1" + "}" * 20_000),
        ("block", "".join(f"{'  ' * depth}k{depth}:\n" for depth in range(300)) + "  " * 300 + "v"),
    ],
)
def test_deep_nesting_is_refused_in_any_style(tmp_path: Path, style: str, text: str) -> None:
    message = refusal(load_app_spec, write(tmp_path / "sample.yaml", text))
    assert "nested too deeply" in message or "not valid YAML" in message, (style, message)


def test_invalid_yaml_and_binary_are_refused_with_a_short_message(tmp_path: Path) -> None:
    assert "not valid YAML" in refusal(load_app_spec, write(tmp_path / "sample.yaml", "name: a: b: c\n" * 2000))
    binary = tmp_path / "sample.yaml"
    binary.write_bytes(b"name: \xff\xfe\x00\x01")
    assert "not UTF-8" in refusal(load_app_spec, binary)


def test_a_document_wrong_everywhere_says_so_in_a_bounded_message(tmp_path: Path) -> None:
    wrong = {key: {"deep": [{"x": i} for i in range(500)]} for key in SAMPLE}
    message = refusal(load_app_spec, write(tmp_path / "sample.yaml", yaml.safe_dump(wrong)))
    assert "more invalid field(s)" in message


def test_a_huge_string_is_refused_naming_its_field_without_quoting_it_whole(tmp_path: Path) -> None:
    document = with_value(SAMPLE, "dev.smoke_checks.0.body_contains", "y" * 100_000)
    message = refusal(load_app_spec, write(tmp_path / "sample.yaml", yaml.safe_dump(document)))
    assert "dev.smoke_checks.0.body_contains" in message
    assert "y" * 200 not in message


# --- values that would reach a command, a path, a config, a tag or a label ------------------

APP_FIELDS = [
    "name",
    "source.path",
    "packaging.distribution",
    "runtime.health_path",
    "dev.smoke_checks.0.path",
    "canary.metrics.0.name",
    "canary.metrics.0.group",
    "bluegreen.post_flip_checks.0.name",
    "canary.rate_window",
    "tier",
]


@pytest.mark.parametrize("field", APP_FIELDS)
@pytest.mark.parametrize("value", SHELL_AND_PATH, ids=repr)
def test_app_spec_fields_refuse_shell_and_path_metacharacters(tmp_path: Path, field: str, value: str) -> None:
    path = write(tmp_path / "sample.yaml", yaml.safe_dump(with_value(SAMPLE, field, value)))
    message = refusal(load_app_spec, path)
    assert f"field '{field}'" in message or (field == "name" and "must match the file name" in message), message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("runtime.env", {"A; rm": "x"}),
        ("runtime.env", {"OK": "line\nbreak"}),
        ("runtime.command", ["python", "a\x00b"]),
        ("staging.test_command", ["sh", "-c", "x\ny"]),
        ("source", {"git": {"url": "https://example.org/x.git; rm -rf /", "ref": "main"}}),
        ("source", {"git": {"url": "https://example.org/x.git", "ref": "a..b"}}),
        ("source", {"git": {"url": "https://example.org/x.git", "ref": "$(id)"}}),
        ("canary.metrics", [SAMPLE["canary"]["metrics"][0]] * 51),
    ],
)
def test_structured_app_fields_refuse_what_would_break_a_command(tmp_path: Path, field: str, value: Any) -> None:
    path = write(tmp_path / "sample.yaml", yaml.safe_dump(with_value(SAMPLE, field, value)))
    assert f"field '{field}" in refusal(load_app_spec, path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repository", "base; rm -rf /"),
        ("upstream.image", "debian:bookworm$(id)"),
        ("remove_packages", ["curl; id"]),
        ("common_packages", ["../x"]),
        ("setuid_allowlist", ["/usr/bin/../../etc/shadow"]),
        ("setuid_allowlist", ["/usr/bin/su *"]),
        ("runtime_user.name", "app`id`"),
        ("upstream.suite", "bookworm\nx"),
    ],
)
def test_base_spec_fields_refuse_metacharacters(tmp_path: Path, field: str, value: Any) -> None:
    path = write(tmp_path / "base.yaml", yaml.safe_dump(with_value(BASE, field, value)))
    assert f"field '{field}" in refusal(load_base_spec, path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("regions.0.name", "eu-west; rm"),
        ("regions.0.name", "../x"),
        ("local.instance", "a b"),
        ("local.state_dir", "../../outside"),
        ("local.state_dir", "var;id"),
        ("regions", [PLATFORM["regions"][0]] * 65),
    ],
)
def test_platform_fields_refuse_metacharacters(tmp_path: Path, field: str, value: Any) -> None:
    path = write(tmp_path / "platform.yaml", yaml.safe_dump(with_value(PLATFORM, field, value)))
    assert f"field '{field}" in refusal(load_platform, path)


def test_platform_yaml_alias_bomb_and_base_yaml_size_are_refused(tmp_path: Path) -> None:
    assert "expands to more than" in refusal(load_platform, write(tmp_path / "platform.yaml", BILLION_LAUGHS))
    huge = tmp_path / "base.yaml"
    huge.write_text("repository: x\n" + "#" * (MAX_FILE_BYTES + 1))
    assert "may have at most" in refusal(load_base_spec, huge)


# --- trigger forms and REST conf -------------------------------------------------------------


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"version": {"nested": ["deep"] * 1000}}, "version"),
        ({"version": "1.0.0; rm -rf /"}, "version"),
        ({"ref": "$(reboot)"}, "ref"),
        ({"ref": "a..b"}, "ref"),
        ({"ref": "x" * 10_000}, "ref"),
        ({"note": "n" * 100_000}, "note"),
        ({"note": 12}, "note"),
    ],
)
def test_the_release_conf_is_refused_field_by_field(conf: dict[str, Any], field: str) -> None:
    with refused_within(), pytest.raises(ConfigError) as raised:
        parse_release_params(conf)
    message = str(raised.value)
    assert f"release trigger: field '{field}'" in message
    assert len(message) <= MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"cves": ["CVE-2026-1234; id"]}, "cves.0"),
        ({"cves": "CVE-2026-1234"}, "cves"),
        ({"reason": "because"}, "reason"),
        ({"force": {"a": 1}}, "force"),
    ],
)
def test_the_base_image_conf_is_refused_field_by_field(conf: dict[str, Any], field: str) -> None:
    with refused_within(), pytest.raises(ConfigError, match=rf"base_image trigger: field '{field}'"):
        parse_base_params(conf)


def test_a_flood_of_cve_ids_is_refused_with_a_short_message() -> None:
    with refused_within(), pytest.raises(ConfigError) as raised:
        parse_base_params({"cves": [f"bad-{i}" for i in range(100_000)]})
    assert len(str(raised.value)) <= MAX_MESSAGE_CHARS
    assert "more invalid field(s)" in str(raised.value)


def test_every_release_form_field_that_reaches_a_command_has_a_pattern_or_a_length() -> None:
    """The form refuses before a run exists (Airflow validates the JSON schema of each Param)."""
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    import dags.releases as releases
    from immutable.app_spec import AppSpec

    dag = releases.release_dag(AppSpec.model_validate(SAMPLE), load_platform(ROOT / "include" / "platform.yaml"))
    for name, bad in (("ref", "a..b"), ("ref", "$(id)"), ("ref", "x" * 300), ("version", "1." * 40)):
        params = ParamsDict({k: dag.params.get_param(k) for k in dag.params})
        with pytest.raises(ParamValidationError, match=f"param {name}"):
            params.update({name: bad})
            params.validate()


# --- one bad spec never hides the others ------------------------------------------------------


def test_hostile_specs_beside_a_good_one_leave_the_good_one_loaded(tmp_path: Path) -> None:
    write(tmp_path / "sample.yaml", yaml.safe_dump(SAMPLE))
    write(tmp_path / "bomb.yaml", BILLION_LAUGHS)
    write(tmp_path / "deep.yaml", "name: " + "[" * 50_000)
    write(tmp_path / "huge.yaml", "x" * (MAX_FILE_BYTES + 10))
    write(tmp_path / "typed.yaml", yaml.safe_dump(with_value(SAMPLE, "canary.metrics.0.critical", {"no": 1})))
    started = time.monotonic()
    with refused_within():
        specs, errors = load_app_specs(tmp_path)
    assert list(specs) == ["sample"]
    assert sorted(errors) == ["bomb.yaml", "deep.yaml", "huge.yaml", "typed.yaml"]
    for name, message in errors.items():
        assert name in message and len(message) <= MAX_MESSAGE_CHARS, (name, message)
    assert time.monotonic() - started < HANG_GUARD_S


def test_the_spec_models_are_strict_about_types_at_depth() -> None:
    with pytest.raises(ValueError, match="remove_packages"):
        BaseImageSpec.model_validate(with_value(BASE, "remove_packages", [{"a": "b"}]))


def test_the_nesting_scan_counts_what_the_parser_would_nest_and_not_what_is_quoted() -> None:
    from immutable.bounded_yaml import nesting_depth

    assert nesting_depth((ROOT / "include" / "apps" / "sample.yaml").read_text()) <= 8
    assert nesting_depth("a: '[[[[[[[[[[[[[[[[[[[[[[[[[[[['\nb: \"{{{{{{{{{{{{{{{{{{{{{{{{{{{{\"\n") == 1
    assert nesting_depth("a: [it's, " + "[" * 30) > 24  # an apostrophe inside a plain scalar opens nothing
    # 7 levels (map, list, map, list, map, flow list, flow map): the estimate is within a factor of two
    assert 4 <= nesting_depth("a:\n  - b:\n      - c: [1, {d: 2}]\n") <= 7
