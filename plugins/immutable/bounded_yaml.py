"""Reading a YAML file that may be hostile, in bounded time and memory.

A config file reaches us from anyone who can open a pull request. YAML lets a small file expand to
a huge document (aliases of aliases, "billion laughs"), nest deeper than any parser's stack, or
simply be huge. So: the size is checked before reading; the nesting is measured by a linear scan
of the text (brackets and indentation) before any parser sees it; the node graph is composed by
libyaml (aliases stay shared references, so composing is linear in the text) and walked with
aliases expanded, counting, before anything is constructed. Every refusal is one short sentence
naming the file and the limit.
"""

from __future__ import annotations

from pathlib import Path

import yaml

# libyaml where it is installed (PyYAML's wheels carry it): ten to a hundred times faster.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_FILE_BYTES = 256 * 1024  # a spec is a few KiB; ample for hundreds of metrics or packages
MAX_DEPTH = 24  # levels of nesting; the deepest real document (an app spec) has 7
MAX_NODES = 50_000  # nodes after alias expansion; a full app spec has a few hundred
MAX_MESSAGE_CHARS = 2000  # an error message is read in a task log or the UI's import errors


class YamlRefused(ValueError):
    """The document is not valid YAML or passes a limit; the message names the file and the cause."""


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message`, cut to `limit` characters with a note of how much was left out."""
    if len(message) <= limit:
        return message
    return message[: limit - 40] + f" ... ({len(message) - limit + 40} more characters)"


def load_bounded_yaml(path: Path) -> object:
    return parse_bounded_yaml(read_bounded_text(path), str(path))


def read_bounded_text(path: Path) -> str:
    """The file's text, refused when it is too big or not UTF-8."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise YamlRefused(f"{path}: file not found") from None
    if size > MAX_FILE_BYTES:
        raise YamlRefused(f"{path}: {size} bytes; a config file may have at most {MAX_FILE_BYTES}")
    with path.open("rb") as stream:
        raw = stream.read(MAX_FILE_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlRefused(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return text


def parse_bounded_yaml(text: str, source: str) -> object:
    if len(text.encode()) > MAX_FILE_BYTES:
        raise YamlRefused(f"{source}: more than {MAX_FILE_BYTES} bytes of YAML")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise YamlRefused(f"{source}: nested too deeply ({depth} levels; at most {MAX_DEPTH})")
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_shape(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise YamlRefused(f"{source}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        raise YamlRefused(bounded(f"{source}: not valid YAML: {exc}", 600)) from None
    finally:
        loader.dispose()


def _check_shape(root: yaml.Node, source: str) -> None:
    """Walk the node graph as construction would (aliases expanded), without building anything."""
    pending: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen = 0
    while pending:
        node, depth = pending.pop()
        seen += 1
        if seen > MAX_NODES:
            raise YamlRefused(
                f"{source}: expands to more than {MAX_NODES} values (aliases repeat what they name); "
                "write the document out without deep aliases"
            )
        if depth > MAX_DEPTH:
            raise YamlRefused(f"{source}: nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(node, yaml.SequenceNode):
            pending.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                pending.append((key, depth + 1))
                pending.append((value, depth + 1))


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """An estimate of the document's nesting, in one pass that stops past `limit`: open flow brackets
    outside quoted scalars and comments, plus the levels of block indentation (a "- " item counts
    as one more). It keeps the parser away from pathological input (thousands of levels); the walk
    of the composed nodes (`_check_shape`) then holds the exact limit. A quote opens a scalar only
    where a scalar may start, as in YAML."""
    deepest = 0
    indents: list[int] = [-1]
    flow = 0
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if flow == 0 and stripped and not stripped.startswith("#"):
            indent = len(line) - len(stripped)
            while indents[-1] >= indent:
                indents.pop()
            indents.append(indent)
            items = 0
            while stripped.startswith("- "):
                items += 1
                stripped = stripped[2:].lstrip(" ")
            deepest = max(deepest, len(indents) - 1 + items)
        quote, previous = "", " "
        for char in stripped:
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"" and previous in " [{,:":
                quote = char
            elif char == "#" and previous == " ":
                break
            elif char in "[{":
                flow += 1
                deepest = max(deepest, len(indents) - 1 + flow)
                if deepest > limit:
                    return deepest
            elif char in "]}":
                flow = max(0, flow - 1)
            previous = char if char != " " or previous not in "[{," else previous
        if deepest > limit:
            return deepest
    return deepest
