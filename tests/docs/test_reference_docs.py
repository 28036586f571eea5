"""The reference docs cover exactly what the code has: a key, verb or option added without docs
(or docs left behind after a removal) fails here. `python -m tests.docs.reference` lists gaps."""

from __future__ import annotations

import re

import pytest

from tests.docs.reference import (
    ROOT,
    backticked,
    cli_commands,
    config_keys,
    doc_text,
    http_routes,
    policy_keys,
    problem_codes,
)

TABLE_KEY = re.compile(r"^\| `([^`]+)` \|", re.MULTILINE)


def documented_sections(text: str) -> dict[str, str]:
    """`### \\`gateway verb ...\\`` heading -> the section's text."""
    out: dict[str, str] = {}
    parts = re.split(r"^### `(gateway[^`]*)`\s*$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        out[heading.strip()] = body.split("\n## ", 1)[0]
    return out


class TestConfigurationDoc:
    """docs/configuration.md names every key of gateway.yaml and policies/*.yaml."""

    @pytest.mark.parametrize("key", config_keys() + policy_keys())
    def test_key_documented(self, key):
        assert key in backticked(doc_text("configuration.md")), (
            f"docs/configuration.md does not describe `{key}`: add a table row for it"
        )

    def test_no_stale_rows(self):
        known = set(config_keys()) | set(policy_keys())
        rows = TABLE_KEY.findall(doc_text("configuration.md"))
        assert rows
        assert [row for row in rows if row not in known] == []


class TestCliDoc:
    """docs/cli.md has a section for every verb, naming each of its options."""

    @pytest.mark.parametrize("command", sorted(cli_commands()))
    def test_command_documented(self, command):
        sections = documented_sections(doc_text("cli.md"))
        owners = [h for h in sections if command == h or command.startswith(h + " ")]
        assert owners, f"docs/cli.md has no `### \\`{command}\\`` section"
        body = sections[max(owners, key=len)]
        missing = [o for o in sorted(cli_commands()[command]) if o not in body]
        assert missing == [], f"docs/cli.md, {command}: options not described: {missing}"

    def test_no_stale_sections(self):
        commands = set(cli_commands())
        stale = [
            h
            for h in documented_sections(doc_text("cli.md"))
            if not any(c == h or c.startswith(h + " ") for c in commands)
        ]
        assert stale == []


class TestHttpDoc:
    """docs/http.md names every page and endpoint under {prefix} and every problem code."""

    @pytest.mark.parametrize("route", http_routes())
    def test_route_documented(self, route):
        assert route in backticked(doc_text("http.md")), f"docs/http.md: add a row for `{route}`"

    @pytest.mark.parametrize("code", problem_codes())
    def test_problem_code_documented(self, code):
        assert code in backticked(doc_text("http.md")), f"docs/http.md: describe code `{code}`"

    def test_routes_found(self):
        routes = http_routes()
        assert "{prefix}/login" in routes and "{prefix}/admin/users/{name}" in routes


class TestNoLinkLeavesTheRepository:
    """Docs link only to files inside the repository, and those files exist."""

    def test_relative_links_resolve(self):
        link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
        broken = []
        for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
            for target in link.findall(md.read_text()):
                if re.match(r"^[a-z]+:", target):
                    continue
                if (
                    not (md.parent / target).resolve().is_relative_to(ROOT)
                    or not (md.parent / target).exists()
                ):
                    broken.append(f"{md.relative_to(ROOT)} -> {target}")
        assert broken == []
