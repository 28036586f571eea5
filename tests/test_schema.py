"""The JSON Schemas editors use: generated from the models, shipped, and true to the examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.cli import main
from gateway.demo.run import write_demo_files
from gateway.policy.jsonschema import SHIPPED_FILES, build_schema

ROOT = Path(__file__).resolve().parent.parent
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
EXAMPLES = {
    "config": [ROOT / "config" / "gateway.yaml", ROOT / "docker" / "gateway.yaml"],
    "policy": sorted((ROOT / "policies").glob("*.yaml")),
}


class EditorLoader(yaml.SafeLoader):
    """Reads YAML as the YAML language server does (1.2 core schema: dates stay strings)."""


EditorLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read(path: Path) -> object:
    return yaml.load(path.read_text(), Loader=EditorLoader)


def validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = build_schema(kind)  # type: ignore[arg-type]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(kind: str, document: object) -> list[str]:
    return [e.message for e in validator(kind).iter_errors(document)]


class TestShippedSchemas:
    """The files in schema/ are what `gateway schema` prints today."""

    @pytest.mark.parametrize("kind", ["config", "policy"])
    def test_shipped_file_is_current(self, kind, capsys):
        assert main(["schema", kind]) == 0
        printed = json.loads(capsys.readouterr().out)
        shipped = json.loads((ROOT / SHIPPED_FILES[kind]).read_text())
        assert printed == shipped, (
            f"{SHIPPED_FILES[kind]} is stale: run "
            f"`gateway schema {kind} > {SHIPPED_FILES[kind]}` and commit it"
        )

    def test_default_kind_is_policy(self, capsys):
        assert main(["schema"]) == 0
        assert json.loads(capsys.readouterr().out) == build_schema("policy")

    def test_unknown_kind_is_a_usage_error(self, capsys):
        with pytest.raises(SystemExit) as exc:
            main(["schema", "users"])
        assert exc.value.code == 2


class TestExampleFiles:
    """Every example file names its schema on line 1 and is valid against it."""

    @pytest.mark.parametrize(
        ("kind", "path"),
        [(k, p) for k, paths in EXAMPLES.items() for p in paths],
        ids=lambda v: v if isinstance(v, str) else v.relative_to(ROOT).as_posix(),
    )
    def test_modeline_and_valid(self, kind, path):
        first = path.read_text().splitlines()[0]
        match = MODELINE.match(first)
        assert match, f"{path}: line 1 must be the yaml-language-server modeline"
        assert (path.parent / match.group(1)).resolve() == (ROOT / SHIPPED_FILES[kind]).resolve()
        assert problems(kind, read(path)) == []

    def test_demo_files_are_valid(self, tmp_path):
        write_demo_files(tmp_path, 8080, 8081, 8082)
        assert problems("config", read(tmp_path / "gateway.yaml")) == []
        policy_files = sorted((tmp_path / "policies").glob("*.yaml"))
        assert policy_files
        for path in policy_files:
            assert problems("policy", read(path)) == [], path.name


class TestWhatEditorsFlag:
    """The schema catches what an admin gets wrong while typing, and accepts what is right."""

    def test_unknown_key(self):
        assert problems("policy", {"two_factor": {"enforce": "all", "enforced": True}})

    def test_wrong_type_and_value(self):
        assert problems("policy", {"protection": {"enabled": "maybe"}})
        assert problems("policy", {"two_factor": {"enforce": "sometimes"}})
        assert problems("config", {"listen": {"port": "eighty"}})

    def test_durations_in_both_forms(self):
        for value in ("10m", "30s", "1.5h", 600):
            assert problems("policy", {"login_regulation": {"window": value}}) == []
        assert problems("policy", {"login_regulation": {"window": "ten minutes"}})

    def test_smtp_from_is_spelled_as_in_yaml(self):
        assert problems("config", {"smtp": {"host": "mail", "from": "gw@example.com"}}) == []
        assert problems("config", {"smtp": {"host": "mail", "sender": "gw@example.com"}})

    def test_dates_as_editors_read_them(self):
        doc = yaml.load(
            "service_accounts: {sync: {key_sha256: '%s', expires: 2027-06-30}}" % ("a" * 64),
            Loader=EditorLoader,
        )
        assert problems("policy", doc) == []

    def test_empty_file_is_valid(self):
        assert problems("policy", None) == []
