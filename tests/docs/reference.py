"""What the reference docs must cover, read from the code: schema keys, CLI verbs, HTTP routes.

`python -m tests.docs.reference` prints what docs/ does not yet mention, to paste and describe.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from gateway.policy.schema import GatewayConfig, Policy

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _unwrap(t: object) -> object:
    origin = typing.get_origin(t)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(t)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return t


def _is_model(t: object) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def schema_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key path a YAML file can hold: `sessions.idle_timeout`, `users.<name>.grants`,
    `legal_contacts[].email`."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        yield path
        t = _unwrap(field.annotation)
        origin = typing.get_origin(t)
        if _is_model(t):
            yield from schema_keys(t, path + ".")  # type: ignore[arg-type]
        elif origin is dict and _is_model(v := _unwrap(typing.get_args(t)[1])):
            yield from schema_keys(v, path + ".<name>.")  # type: ignore[arg-type]
        elif origin is tuple and _is_model(v := _unwrap(typing.get_args(t)[0])):
            yield from schema_keys(v, path + "[].")  # type: ignore[arg-type]


def config_keys() -> list[str]:
    return list(schema_keys(GatewayConfig))


def policy_keys() -> list[str]:
    return list(schema_keys(Policy))


def cli_commands(parser: argparse.ArgumentParser | None = None) -> dict[str, set[str]]:
    """`gateway VERB [ACTION]` -> the option strings and positional names it takes."""
    from gateway.cli import _parser

    out: dict[str, set[str]] = {}

    def visit(p: argparse.ArgumentParser, words: str) -> None:
        options: set[str] = set()
        children = False
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                children = True
                for name, child in action.choices.items():
                    visit(child, f"{words} {name}")
            elif isinstance(action, argparse._HelpAction):
                continue
            elif action.option_strings:
                options.update(o for o in action.option_strings if o.startswith("--"))
                options.update(o for o in action.option_strings if len(o) == 2)
            else:
                options.add(action.dest.upper())
        # A verb with actions is documented by its actions, plus itself when it takes options
        # of its own (`gateway incidents --open` lists; `gateway incidents show ID` shows).
        if not children or options - {"--config"}:
            out[words] = options

    visit(parser or _parser(), "gateway")
    return out


def http_routes() -> list[str]:
    """Every page and endpoint under {prefix}, as `{prefix}/path` with `{name}` placeholders."""
    from gateway.app import build_pages

    pages = build_pages()
    out = [f"{{prefix}}/{name}" for name in pages._table]
    for prefix, page in pages._mounts:
        for route in getattr(page.handler, "_routes", ()):
            rest = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.pattern.pattern)
            out.append(f"{{prefix}}/{prefix}{rest}")
    return out


def problem_codes() -> list[str]:
    from gateway.web.errors import _TEXTS

    return sorted(_TEXTS)


def doc_text(name: str) -> str:
    return (DOCS / name).read_text()


def backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


def main() -> None:
    config = backticked(doc_text("configuration.md"))
    for key in config_keys() + policy_keys():
        if key not in config:
            print(f"configuration.md: `{key}`")
    http = backticked(doc_text("http.md"))
    for route in http_routes():
        if route not in http:
            print(f"http.md: `{route}`")
    for code in problem_codes():
        if code not in http:
            print(f"http.md: code `{code}`")
    cli = doc_text("cli.md")
    for command, options in cli_commands().items():
        if f"`{command}" not in cli:
            print(f"cli.md: {command} {sorted(options)}")


if __name__ == "__main__":
    main()
