"""`gateway schema [config|policy]`: print the JSON Schema editors use to check the YAML files."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.policy.jsonschema import KINDS, build_schema


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    schema = sub.add_parser(
        "schema",
        parents=[common],
        help="print the JSON Schema of gateway.yaml or of a policy file (for editors)",
    )
    schema.add_argument(
        "kind",
        nargs="?",
        choices=KINDS,
        default="policy",
        help="policy (default): one policies/*.yaml file; config: gateway.yaml",
    )


def cmd_schema(args: argparse.Namespace) -> int:
    json.dump(build_schema(args.kind), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0
