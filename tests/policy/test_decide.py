"""Pure decisions: role rules (deny wins, default deny), app matching, allowlists, accounts."""

from __future__ import annotations

import pytest

from gateway.policy import decide
from gateway.policy.explain import explain
from gateway.policy.source import load
from tests.factories import api_key, gateway_files, key_sha256


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp("decide")
    files = gateway_files(
        root,
        accounts={
            "sync": {
                "key_sha256": key_sha256(api_key("sync")),
                "grants": {"protection-api": "writer"},
            },
            "old": {
                "key_sha256": key_sha256(api_key("old")),
                "grants": {"protection-api": "viewer"},
                "expires": "2020-01-31",
            },
            "pinned": {
                "key_sha256": key_sha256(api_key("pinned")),
                "grants": {"protection-api": "viewer"},
                "allow": ["198.51.100.7/32"],
            },
        },
        allowlists={
            "dashboard": {
                "enabled": True,
                "entries": [{"ip": "203.0.113.0/24", "description": "Office"}],
            },
            "api": {"enabled": False},
        },
    )
    result = load(files.config_file)
    assert result.snapshot is not None
    return result.snapshot


ROLE_TABLE = [
    # role, method, path (relative to the app), allowed
    ("viewer", "GET", "/", True),
    ("viewer", "HEAD", "/reports/1", True),
    ("viewer", "POST", "/reports", False),
    ("viewer", "DELETE", "/x", False),
    ("editor", "POST", "/reports", True),
    ("editor", "PUT", "/settings", False),  # deny /settings/ matches the segment itself
    ("editor", "GET", "/settings/users", False),  # deny wins over allow
    ("editor", "GET", "/settingsx", True),  # segment-aware: not /settings/
    ("admin", "DELETE", "/settings/users", True),
    ("admin", "PATCH", "/", True),
]


class TestRoles:
    """Role rules: methods and path prefixes, deny wins, nothing matched is denied."""

    @pytest.mark.parametrize(("role", "method", "path", "allowed"), ROLE_TABLE)
    def test_table(self, snapshot, role, method, path, allowed):
        verdict = decide.check_role(snapshot.roles[role], method, path)
        assert verdict.allowed is allowed
        if not allowed:
            assert verdict.code == "forbidden"

    def test_reason_names_the_rule(self, snapshot):
        verdict = decide.check_role(snapshot.roles["editor"], "GET", "/settings/a")
        assert verdict.reason == "roles.editor.deny[0] denies GET /settings/a"

    def test_no_grant_is_forbidden(self, snapshot):
        app = snapshot.apps["protection-api"]
        verdict, role = decide.authorize(snapshot, {}, app, "GET", "/api/x")
        assert (verdict.allowed, verdict.code, role) == (False, "forbidden", None)

    def test_rules_are_relative_to_the_app_prefix(self, snapshot):
        app = snapshot.apps["protection-api"]
        verdict, role = decide.authorize(
            snapshot, {"protection-api": "editor"}, app, "POST", "/api/settings/x"
        )
        assert (verdict.allowed, role) == (False, "editor")


class TestAccounts:
    """Service account checks: expiry and the per-account allow list."""

    def test_expired(self, snapshot):
        verdict = decide.check_account(snapshot.accounts["old"], (4, 0x7F000001), 1.7e9)
        assert (verdict.allowed, verdict.code) == (False, "unauthenticated")

    def test_expires_at_end_of_day(self, snapshot):
        # 2020-01-31 ends at 2020-02-01T00:00:00Z = 1580515200
        assert snapshot.accounts["old"].expires_at == 1580515200.0

    def test_per_account_allow(self, snapshot):
        pinned = snapshot.accounts["pinned"]
        inside = (4, int.from_bytes(bytes([198, 51, 100, 7]), "big"))
        assert decide.check_account(pinned, inside, 0).allowed
        verdict = decide.check_account(pinned, (4, 0x7F000001), 0)
        assert (verdict.allowed, verdict.code) == (False, "ip_not_allowed")

    def test_lookup_by_digest(self, snapshot):
        import hashlib

        digest = hashlib.sha256(api_key("sync").encode()).digest()
        assert decide.find_account(snapshot, digest).name == "sync"
        assert decide.find_account(snapshot, b"\0" * 32) is None


class TestExplain:
    """`gateway explain` walks the same steps and names what decided."""

    def test_allowed_user(self, snapshot):
        out = explain(
            snapshot,
            surface="dashboard",
            ip="203.0.113.5",
            method="get",
            path="/reports/../settings",
            user="alice",
        )
        assert out.decision == "allow"
        assert [s for s, _ in out.steps] == [
            "client ip",
            "path",
            "app",
            "allowlist",
            "authenticate",
            "authorize (admin)",
            "forward",
        ]
        assert dict(out.steps)["path"] == "/reports/../settings normalised to /settings"
        assert (
            "allowlists.dashboard.entries[0] 203.0.113.0/24 (Office) matches"
            in dict(out.steps)["allowlist"]
        )

    def test_denied_by_allowlist(self, snapshot):
        out = explain(
            snapshot, surface="dashboard", ip="192.0.2.1", method="GET", path="/", user="alice"
        )
        assert out.decision == "deny:ip_not_allowed"
        assert out.steps[-1] == (
            "allowlist",
            "the client IP is in no entry of allowlists.dashboard",
        )

    def test_viewer_post_forbidden(self, snapshot):
        out = explain(
            snapshot, surface="dashboard", ip="203.0.113.5", method="POST", path="/x", user="bob"
        )
        assert out.decision == "deny:forbidden"
        assert out.steps[-1] == ("authorize (viewer)", "no rule of role 'viewer' allows POST /x")

    def test_user_on_api_surface(self, snapshot):
        out = explain(
            snapshot, surface="api", ip="127.0.0.1", method="GET", path="/api/x", user="alice"
        )
        assert out.decision == "deny:unauthenticated"

    def test_ambiguous_path(self, snapshot):
        out = explain(
            snapshot,
            surface="api",
            ip="127.0.0.1",
            method="GET",
            path="/api/%2e%2e/x",
            account="sync",
        )
        assert out.decision == "deny:bad_request"
