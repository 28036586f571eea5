"""YAML to plain data, and the line of every key so errors can point at it.

Two passes, because the second is only needed when something is wrong. The data comes from
libyaml (CSafeLoader) in one fast pass; the line of each key path is worked out from a second,
node-by-node pass on first use: when a problem is reported, or when the fast pass saw a mapping
with fewer keys than entries (a key given twice), which the node pass then names exactly.
A policy with 100,000 allowlist entries would otherwise spend most of a reload here.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gateway.policy.errors import ConfigReport, KeyPath, SourceFile

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """Safe loading that keeps dates as text: our schema parses them where they are meant."""

    suspect_duplicates = False

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        mapping = super().construct_mapping(node, deep=deep)
        if len(mapping) != len(node.value):
            self.suspect_duplicates = True
        return mapping


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


class _LazyLines(dict[KeyPath, int]):
    """The key-path -> line map, worked out from the text on first lookup."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self._text: str | None = text

    def get(self, key, default=None):  # type: ignore[no-untyped-def,override]
        if self._text is not None:
            text, self._text = self._text, None
            self.update(_line_map(text)[0])
        return super().get(key, default)


def _line_map(text: str) -> tuple[dict[KeyPath, int], list[tuple[KeyPath, int]]]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        dupes: list[tuple[KeyPath, int]] = []
        if node is not None:
            _walk(node, (), loader, lines, dupes)
        return lines, dupes
    finally:
        loader.dispose()


def _walk(
    node: yaml.Node, path: KeyPath, loader: _Loader, lines: dict[KeyPath, int], dupes: list
) -> object:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[object, object] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | bool | float) or key is None:
                key = str(key)
            if key in out:
                dupes.append(((*path, str(key)), key_node.start_mark.line + 1))
            child = (*path, key if isinstance(key, str) else str(key))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, child, loader, lines, dupes)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), loader, lines, dupes) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


# Aliases may repeat at most this many values in all: anchors for a shared rule list are fine;
# "billion laughs" (aliases of aliases, each level ten times the last) is refused before any of
# it is built, by `gateway check` as well as by a reload.
MAX_ALIAS_EXPANSION = 100_000
# `*name` where an alias can start: after the start of a line, a space or a flow indicator.
_ALIAS = re.compile(r"(?:^|[\s\[{,])\*[^\s,\[\]{}]", re.MULTILINE)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _alias_problem(text: str) -> str | None:
    """Why the document's aliases are refused, or None. Works on the node graph, where an
    alias is one more reference to its anchor's node, so nothing is expanded to count it."""
    if not _ALIAS.search(text):
        return None  # no alias at all: the common case costs one regex scan
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError:
        return None  # the parse proper reports it with its line
    finally:
        loader.dispose()
    if root is None:
        return None
    sizes: dict[int, int] = {}
    open_nodes = {id(root)}
    stack = [(root, iter(_children(root)))]
    while stack:
        node, pending = stack[-1]
        for child in pending:
            if id(child) in sizes:
                continue
            if id(child) in open_nodes:
                return "an alias refers to its own anchor (a recursive structure)"
            open_nodes.add(id(child))
            stack.append((child, iter(_children(child))))
            break
        else:
            stack.pop()
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in _children(node))
    if sizes[id(root)] - len(sizes) > MAX_ALIAS_EXPANSION:
        return (
            f"aliases expand to more than {MAX_ALIAS_EXPANSION:,} values; "
            "write the values out or use fewer levels of aliases"
        )
    return None


def parse_yaml(text: str, name: str, report: ConfigReport) -> SourceFile | None:
    """Parse one YAML document; syntax errors, duplicate keys and alias bombs go to the report."""
    problem = _alias_problem(text)
    if problem is not None:
        report.error(name, (), problem)
        return None
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
        suspect = loader.suspect_duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        report.problems.append(_syntax_problem(name, line, exc))
        return None
    except yaml.YAMLError as exc:
        report.error(name, (), f"not valid YAML: {exc}")
        return None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not suspect:
        return SourceFile(name, data, _LazyLines(text))
    lines, dupes = _line_map(text)
    for path, line in dupes:
        report.error(SourceFile(name, None, {path: line}), path, "key given twice in this file")
    return SourceFile(name, data, lines)


def _syntax_problem(name: str, line: int | None, exc: yaml.MarkedYAMLError):  # type: ignore[no-untyped-def]
    from gateway.policy.errors import Problem

    reason = exc.problem or "syntax error"
    if exc.context:
        reason = f"{exc.context}, {reason}"
    return Problem("error", name, line, "(syntax)", f"not valid YAML: {reason}")


def read_yaml(path: Path, display: str, report: ConfigReport) -> SourceFile | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        report.error(display, (), f"cannot read the file ({exc.strerror})")
        return None
    except UnicodeDecodeError:
        report.error(display, (), "the file is not UTF-8 text")
        return None
    return parse_yaml(text, display, report)
