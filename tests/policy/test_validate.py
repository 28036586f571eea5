"""Every configuration problem is reported at once, with file, line, key path and value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.policy.source import load
from tests.factories import gateway_files, password_hash


def _load(tmp_path: Path, config: str | None = None, **policies: str):
    files = gateway_files(tmp_path)
    if config is not None:
        files.config_file.write_text(textwrap.dedent(config))
    for name, text in policies.items():
        files.write_policy(name, textwrap.dedent(text))
    result = load(files.config_file)
    return result, [str(p).replace(f"{tmp_path}/", "") for p in result.report.problems]


class TestPolicyErrors:
    """Policy files: exact messages for the mistakes admins make."""

    def test_several_errors_reported_together(self, tmp_path):
        result, problems = _load(
            tmp_path,
            roles="""\
            roles:
              editor:
                allow:
                  - {methods: [GTE]}
                deny:
                  - {path: settings/}
            """,
            people="""\
            users: {}
            """,
        )
        assert result.snapshot is None
        assert problems == [
            "policies/roles.yaml:4 roles.editor.allow[0].methods: 'GTE' is not an HTTP method",
            "policies/roles.yaml:6 roles.editor.deny[0].path: "
            "a path prefix must start with '/', got 'settings/'",
        ]

    def test_top_level_key_in_two_files(self, tmp_path):
        result, problems = _load(
            tmp_path,
            zz_extra="""\
            two_factor: {enforce: all}
            """,
        )
        assert result.snapshot is None
        assert problems == [
            "policies/zz_extra.yaml:1 two_factor: already defined in "
            "policies/security.yaml:1; one top-level key may appear in only one file"
        ]

    def test_literal_choices(self, tmp_path):
        _result, problems = _load(
            tmp_path,
            security="""\
            two_factor: {enforce: sometimes}
            """,
        )
        assert problems == [
            "policies/security.yaml:1 two_factor.enforce: input should be 'all', 'admins' or "
            "'none', got 'sometimes'"
        ]

    def test_grant_of_unknown_app_and_role(self, tmp_path):
        hash_ = password_hash()
        _result, problems = _load(
            tmp_path,
            people=f"""\
            users:
              carol:
                password_hash: "{hash_}"
                grants: {{billing: viewer, console: boss}}
            roles:
              viewer: {{allow: [{{methods: [GET]}}]}}
            """,
        )
        assert problems == [
            "policies/people.yaml:4 users.carol.grants.billing: no app 'billing' in gateway.yaml "
            "(apps: console, protection-api)",
            "policies/people.yaml:4 users.carol.grants.console: no role 'boss' (roles: viewer)",
        ]

    def test_bad_password_hash_and_key_never_echo_the_value(self, tmp_path):
        _result, problems = _load(
            tmp_path,
            people="""\
            users:
              dave: {password_hash: hunter2}
            service_accounts:
              bot: {key_sha256: abc}
            roles: {}
            """,
        )
        assert problems == [
            "policies/people.yaml:2 users.dave.password_hash: expected an argon2id hash as printed "
            "by `gateway hash-password` (the value is not shown)",
            "policies/people.yaml:4 service_accounts.bot.key_sha256: expected 64 hex characters "
            "as printed by `gateway apikey create` (the value is not shown)",
        ]

    def test_service_account_on_dashboard_app(self, tmp_path):
        key = "a" * 64
        _result, problems = _load(
            tmp_path,
            people=f"""\
            service_accounts:
              bot: {{key_sha256: "{key}", grants: {{console: viewer}}}}
            roles:
              viewer: {{allow: [{{methods: [GET]}}]}}
            """,
        )
        assert problems == [
            "policies/people.yaml:2 service_accounts.bot.grants.console: app 'console' is on the "
            "dashboard surface; service accounts sign in only on the api surface"
        ]

    def test_duplicate_yaml_key(self, tmp_path):
        _result, problems = _load(
            tmp_path,
            security="""\
            two_factor: {enforce: all}
            two_factor: {enforce: none}
            """,
        )
        assert problems == ["policies/security.yaml:2 two_factor: key given twice in this file"]

    def test_trusted_login_ip_needs_description(self, tmp_path):
        _result, problems = _load(
            tmp_path,
            trusted="""\
            trusted_login_ips:
              - {cidr: 66.249.64.0/19, scope: example.com, description: ""}
            """,
        )
        assert problems == [
            "policies/trusted.yaml:2 trusted_login_ips[0].cidr: '66.249.64.0/19': /19 is not "
            "allowed; for IPv4 mark the address alone, a network from /31 to /22, or a /17 for "
            "a large provider",
            "policies/trusted.yaml:2 trusted_login_ips[0].description: a description is "
            "required: say why this address is safe",
        ]


class TestConfigErrors:
    """gateway.yaml: unknown keys, wrong types and conflicting apps."""

    def test_unknown_and_wrong(self, tmp_path):
        result, problems = _load(
            tmp_path,
            config="""\
            listen: {host: 0.0.0.0, port: 99999}
            prefx: /gw
            sessions: {idle_timeout: soon}
            apps:
              console: {surface: web, upstream: "ftp://x"}
            """,
        )
        assert result.snapshot is None
        assert problems == [
            "gateway.yaml:1 listen.port: input should be less than or equal to 65535, got 99999",
            "gateway.yaml:3 sessions.idle_timeout: expected a duration like 30s, 10m, 12h or 7d, "
            "got 'soon'",
            "gateway.yaml:5 apps.console.surface: input should be 'dashboard' or 'api', got 'web'",
            "gateway.yaml:5 apps.console.upstream: expected an http:// or https:// URL like "
            "http://127.0.0.1:3000, got 'ftp://x'",
            "gateway.yaml:2 prefx: unknown key; allowed keys: listen, tls, trusted_proxies, "
            "client_ip_header, prefix, public_url, ops_allow, state, sessions, secret_key_file, "
            "audit, smtp, geoip, policies, "
            "upstream_timeouts, apps",
        ]

    def test_two_apps_same_place(self, tmp_path):
        _result, problems = _load(
            tmp_path,
            config="""\
            policies: policies
            apps:
              a: {surface: api, match: {path: /x/}, upstream: "http://127.0.0.1:1"}
              b: {surface: api, match: {path: /x}, upstream: "http://127.0.0.1:2"}
            """,
        )
        assert (
            "gateway.yaml:4 apps.b.match: same host and path as app 'a'; one of them would "
            "never be reached" in problems
        )

    @pytest.mark.parametrize("value", ["10.0.0", "10.0.0.1/24", "fe80::/ten"])
    def test_trusted_proxies_refuse_sloppy_networks(self, tmp_path, value):
        result, problems = _load(
            tmp_path,
            config=f"""\
            policies: policies
            trusted_proxies: ["{value}"]
            """,
        )
        assert result.snapshot is None
        assert problems[0].startswith("gateway.yaml:2 trusted_proxies[0]: ")
