"""Configuration problems, collected all at once, each naming file, line, key path and value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

KeyPath = tuple[str | int, ...]


def format_path(path: Iterable[str | int]) -> str:
    """('roles', 'editor', 'allow', 0, 'methods') -> 'roles.editor.allow[0].methods'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Literal["error", "warning"]
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A loaded YAML file: its data and the line of every key path in it."""

    name: str
    data: object
    lines: Mapping[KeyPath, int]

    def line_of(self, path: KeyPath) -> int | None:
        # The closest enclosing key that has a line: an error inside a flow mapping or about a
        # missing key points at the parent.
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return line
        return None


@dataclass
class ConfigReport:
    """Collects every error and warning of one load; nothing stops at the first problem."""

    problems: list[Problem] = field(default_factory=list)

    def error(self, source: SourceFile | str, path: KeyPath, message: str) -> None:
        self._add("error", source, path, message)

    def warning(self, source: SourceFile | str, path: KeyPath, message: str) -> None:
        self._add("warning", source, path, message)

    def _add(self, severity, source, path, message) -> None:  # type: ignore[no-untyped-def]
        if isinstance(source, SourceFile):
            name, line = source.name, source.line_of(path)
        else:
            name, line = source, None
        self.problems.append(Problem(severity, name, line, format_path(path), message))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors
