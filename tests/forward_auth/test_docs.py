"""docs/forward-auth.md shows the shipped configurations verbatim (they cannot drift apart)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.demo import front_proxy

DOC = Path(__file__).resolve().parents[2] / "docs" / "forward-auth.md"
SHIPPED = ["nginx.conf", "gateway-identity.conf", "Caddyfile", "traefik.yml", "traefik-dynamic.yml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_doc_shows_the_shipped_file(name: str):
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", DOC.read_text(), re.M | re.S)
    assert (front_proxy.DEPLOY / name).read_text().rstrip() + "\n" in blocks
