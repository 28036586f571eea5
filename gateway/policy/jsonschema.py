"""JSON Schemas of config/gateway.yaml and of one policies/*.yaml file, from the pydantic models.

Editors with the YAML language server (VS Code and others) read them through the first line of
a file, `# yaml-language-server: $schema=<path or URL>`, and flag unknown keys and wrong types
as the admin types. They describe shapes only: cross-file rules (a role that must exist, a key
in one file only) stay with `gateway check`.
"""

from __future__ import annotations

from typing import Any, Literal

from gateway.policy.schema import GatewayConfig, Policy

SchemaKind = Literal["config", "policy"]
KINDS: tuple[SchemaKind, ...] = ("config", "policy")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_TITLES = {
    "config": "Access gateway: config/gateway.yaml (deployment settings)",
    "policy": "Access gateway: one policies/*.yaml file (access policy)",
}
# Where the repository ships the generated files; a test keeps them equal to `build_schema`.
SHIPPED_FILES = {"config": "schema/gateway.schema.json", "policy": "schema/policy.schema.json"}


def build_schema(kind: SchemaKind) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) for one kind of file."""
    model = GatewayConfig if kind == "config" else Policy
    schema = model.model_json_schema(by_alias=True, mode="validation")
    # The YAML files may be empty or hold only comments: YAML reads that as null.
    body = {"anyOf": [{"$ref": "#/$defs/Root"}, {"type": "null"}]}
    defs = schema.pop("$defs", {})
    defs["Root"] = schema
    return {"$schema": SCHEMA_DIALECT, "title": _TITLES[kind], **body, "$defs": defs}
