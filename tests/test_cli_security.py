"""`gateway incidents`, `gateway logins`, `gateway trusted-ips` against real files and a real
state store; the listing verbs create nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from gateway.policy.source import load
from gateway.services.audit import AuditLog
from gateway.services.security import SecurityOps
from gateway.services.store import open_store
from tests.factories import GatewayFiles, gateway_files

POLICY_ENTRY = {"cidr": "66.249.0.0/17", "scope": "example.com", "description": "Google mail"}


@pytest.fixture
def files(tmp_path: Path) -> GatewayFiles:
    return gateway_files(
        tmp_path, security={"two_factor": {"enforce": "none"}, "trusted_login_ips": [POLICY_ENTRY]}
    )


def run(files: GatewayFiles, *args: str) -> int:
    return main([*args, "--config", str(files.config_file)])


def everything(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def seed_incident(files: GatewayFiles) -> None:
    """Two sign-ins of alice from two countries (bundled GeoIP), as the gateway records them."""

    async def go() -> None:
        snapshot = load(files.config_file).snapshot
        assert snapshot is not None
        store = await open_store(snapshot.config.state, snapshot.paths.config_dir)
        async with AuditLog(files.audit_file, b"k" * 32) as audit:
            ops = SecurityOps(store, audit, lambda: snapshot)
            alice = snapshot.users["alice"]
            await ops.record_sign_in(alice, "success", "193.0.6.139", "Firefox/130")  # NL
            await ops.record_sign_in(alice, "success", "8.8.8.8", "curl/8")  # US
        await store.close()

    asyncio.run(go())


class TestReadOnly:
    """Listing verbs on a gateway that never ran: nothing to show, and nothing created."""

    def test_nothing_is_created(self, files: GatewayFiles, capsys) -> None:
        before = everything(files.root)
        assert run(files, "incidents") == 0
        assert run(files, "incidents", "--open") == 0
        assert run(files, "logins", "alice") == 0
        assert run(files, "trusted-ips", "list") == 0
        assert everything(files.root) == before
        assert "nothing recorded yet: no state database (sqlite:///state/gateway.db)" in (
            capsys.readouterr().err
        )


class TestIncidents:
    """List, show, acknowledge and resolve from the command line."""

    def test_list_show_resolve(self, files: GatewayFiles, capsys) -> None:
        seed_incident(files)
        capsys.readouterr()
        assert run(files, "incidents", "--open") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["ID", "STATE", "USER", "COUNTRIES", "OPENED", "LAST", "EVIDENCE"]
        assert out[1].split()[:4] == ["1", "open", "alice", "NL,US"]

        assert run(files, "incidents", "show", "1") == 0
        shown = capsys.readouterr().out
        assert "incident 1: alice, open" in shown
        assert "countries: NL, US" in shown
        assert "193.0.6.139" in shown and "8.8.8.8" in shown and "iptocc " in shown

        with pytest.raises(SystemExit) as usage:  # --note is mandatory
            run(files, "incidents", "resolve", "1")
        assert usage.value.code == 2
        capsys.readouterr()
        assert run(files, "incidents", "resolve", "1", "--note", "  ") == 1
        assert "refused: a note is required" in capsys.readouterr().err
        assert run(files, "incidents", "acknowledge", "1") == 0
        assert run(files, "incidents", "resolve", "1", "--note", "VPN exit in the US") == 0
        assert "incident 1 of alice: resolved" in capsys.readouterr().out
        assert run(files, "incidents", "resolve", "1", "--note", "again") == 1
        assert run(files, "incidents", "show", "42") == 1
        assert "refused: there is no incident 42" in capsys.readouterr().err
        assert run(files, "incidents", "--open") == 0
        assert capsys.readouterr().out.strip() == "no open incidents"

        records = [orjson.loads(line) for line in files.audit_file.read_bytes().splitlines()]
        resolved = [r for r in records if r["event"] == "incident.resolved"]
        assert [(r["by"], r["principal"], r["note"]) for r in resolved] == [
            ("cli", None, "VPN exit in the US")
        ]

    def test_logins(self, files: GatewayFiles, capsys) -> None:
        seed_incident(files)
        capsys.readouterr()
        assert run(files, "logins", "alice", "--limit", "1") == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2
        assert lines[1].split()[1:6] == ["success", "8.8.8.8", "US", "no", "iptocc"]
        assert run(files, "logins", "nobody") == 1


class TestTrustedIps:
    """Add with the rules' messages, list policy and run-time entries, remove."""

    def test_add_list_remove(self, files: GatewayFiles, capsys) -> None:
        args = ["trusted-ips", "add"]
        assert run(files, *args, "10.0.0.1/24", "--scope", "example.com", "--description", "x") == 1
        assert "refused: '10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?" in (
            capsys.readouterr().err
        )
        assert run(files, *args, "8.8.0.0/16", "--scope", "example.com", "--description", "x") == 1
        assert "/16 is not allowed" in capsys.readouterr().err
        assert (
            run(files, *args, "8.8.8.0/24", "--scope", "Example.com", "--description", "DNS") == 0
        )
        assert capsys.readouterr().out.strip() == "added 1: 8.8.8.0/24 trusted for example.com"

        assert run(files, "trusted-ips", "list", "--scope", "example.com") == 0
        lines = capsys.readouterr().out.splitlines()
        assert "66.249.0.0/17" in lines[1] and "policy (read-only)" in lines[1]
        assert lines[2].split()[:3] == ["1", "example.com", "8.8.8.0/24"]
        assert run(files, "trusted-ips", "list", "--search", "8.8.8.8") == 0
        assert len(capsys.readouterr().out.splitlines()) == 2

        assert run(files, "trusted-ips", "remove", "1") == 0
        assert run(files, "trusted-ips", "remove", "1") == 1
        assert "refused: there is no trusted IP entry 1" in capsys.readouterr().err
        records = [orjson.loads(line) for line in files.audit_file.read_bytes().splitlines()]
        assert [
            (r["event"], r["by"], r["cidr"]) for r in records if "trusted_ip" in r["event"]
        ] == [
            ("trusted_ip.added", "cli", "8.8.8.0/24"),
            ("trusted_ip.removed", "cli", "8.8.8.0/24"),
        ]
