"""YAML to plain data, remembering the line of every key so errors can point at it."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.policy.errors import ConfigReport, KeyPath, SourceFile


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as text: our schema parses them where they are meant."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


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


def parse_yaml(text: str, name: str, report: ConfigReport) -> SourceFile | None:
    """Parse one YAML document; syntax errors and duplicate keys go to the report."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        dupes: list[tuple[KeyPath, int]] = []
        data = _walk(node, (), loader, lines, dupes) if node is not None else {}
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
    source = SourceFile(name, data, lines)
    for path, line in dupes:
        report.error(SourceFile(name, None, {path: line}), path, "key given twice in this file")
    return source


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
