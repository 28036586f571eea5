"""Bad input to the policy loader (docs/security.md): values that cannot be compiled,
entries that are not readable files, huge files, alias bombs, cascades and name clashes. Each is
a validation error with file, line and key; nothing raises, nothing is silently skipped."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from gateway.policy import compile as compile_module
from gateway.policy.source import MAX_FILE_BYTES, load
from gateway.policy.yamlfile import MAX_ALIAS_EXPANSION
from tests.factories import api_key, gateway_files, key_sha256, password_hash


def _problems(tmp_path: Path, files) -> list[str]:  # type: ignore[no-untyped-def]
    result = load(files.config_file)
    assert result.snapshot is None
    return [str(p).replace(f"{tmp_path}/", "") for p in result.report.problems]


def _account(**extra: object) -> dict:
    return {
        "sync": {
            "key_sha256": key_sha256(api_key("sync")),
            "grants": {"protection-api": "writer"},
            **extra,
        }
    }


class TestValuesThatDoNotCompile:
    """Values the compiler could not turn into a snapshot are validation errors."""

    def test_an_expiry_in_year_9999(self, tmp_path):
        files = gateway_files(tmp_path, accounts=_account(expires="9999-12-31"))
        problems = _problems(tmp_path, files)
        assert len(problems) == 1
        assert problems[0].startswith("policies/people.yaml:")
        assert problems[0].endswith(
            "service_accounts.sync.expires: 9999-12-31 is too far ahead; use a date before 9999"
        )

    @pytest.mark.parametrize(
        ("upstream", "reason"),
        [
            ("http://[::1:3002", "is not a valid URL (Invalid IPv6 URL)"),
            ("http://127.0.0.1:99999", "is not a valid URL (Port out of range 0-65535)"),
            ("http://127.0.0.1:0", "the port must be 1-65535"),
        ],
    )
    def test_an_upstream_that_does_not_parse(self, tmp_path, upstream, reason):
        files = gateway_files(tmp_path, dashboard_upstream=upstream)
        problems = _problems(tmp_path, files)
        assert len(problems) == 1
        assert problems[0].startswith("gateway.yaml:")
        assert " apps.console.upstream: " in problems[0]
        assert reason in problems[0]

    def test_any_compile_failure_names_its_key(self, tmp_path, monkeypatch):
        # The safety net under the validators: whatever a compile step raises is reported at
        # the key it was compiling, never raised.
        def broken(name: str, spec: object) -> object:
            raise OverflowError("date value out of range")

        monkeypatch.setattr(compile_module, "_role", broken)
        files = gateway_files(tmp_path)
        problems = _problems(tmp_path, files)
        assert len(problems) == 1
        assert problems[0].startswith("policies/people.yaml:")
        assert problems[0].endswith(
            "roles.viewer: cannot be compiled: date value out of range"
        ) or problems[0].endswith("roles.admin: cannot be compiled: date value out of range")

    def test_a_400_digit_duration(self, tmp_path):
        files = gateway_files(
            tmp_path,
            security={
                "two_factor": {"enforce": "none"},
                "login_regulation": {"max_failures": 5, "ban": "9" * 400},
            },
        )
        problems = _problems(tmp_path, files)
        assert [p.split(" ", 1)[1] for p in problems] == [
            "login_regulation.ban: a duration can be at most 10 years (3650d)"
        ]


class TestEntriesThatAreNotFiles:
    """Every *.yaml entry is loaded or is an error: a missing file never drops its rules."""

    def test_a_dangling_symlink(self, tmp_path):
        files = gateway_files(tmp_path)
        (tmp_path / "policies" / "extra.yaml").symlink_to(tmp_path / "gone.yaml")
        assert _problems(tmp_path, files) == [
            "policies/extra.yaml (top level): is a symbolic link to gone.yaml, which does not exist"
        ]

    def test_a_symlink_loop(self, tmp_path):
        files = gateway_files(tmp_path)
        (tmp_path / "policies" / "loop.yaml").symlink_to(tmp_path / "policies" / "loop.yaml")
        assert _problems(tmp_path, files) == [
            "policies/loop.yaml (top level): is a symbolic link loop (policies/loop.yaml)"
        ]

    def test_a_folder_named_yaml(self, tmp_path):
        files = gateway_files(tmp_path)
        (tmp_path / "policies" / "allowlists.yaml").mkdir()
        problems = _problems(tmp_path, files)
        assert problems == [
            "policies/allowlists.yaml (top level): is a folder, not a file (Docker creates one "
            "when a bind-mounted file is missing); mount the file or remove the folder"
        ]

    def test_an_entry_that_is_no_regular_file(self, tmp_path):
        files = gateway_files(tmp_path)
        os.mkfifo(tmp_path / "policies" / "pipe.yaml")
        assert _problems(tmp_path, files) == [
            "policies/pipe.yaml (top level): is not a regular file"
        ]

    def test_a_file_over_16_mib(self, tmp_path):
        files = gateway_files(tmp_path)
        with (tmp_path / "policies" / "huge.yaml").open("wb") as f:
            f.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
        assert _problems(tmp_path, files) == [
            "policies/huge.yaml (top level): is 16.0 MiB; files over 16 MiB are refused"
        ]


class TestYamlBombs:
    """Aliases cannot make a small file expand into gigabytes."""

    def test_billion_laughs(self, tmp_path):
        files = gateway_files(tmp_path)
        levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
            levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
        files.write_policy("bomb", "\n".join(levels) + "\n")
        assert _problems(tmp_path, files) == [
            f"policies/bomb.yaml (top level): aliases expand to more than "
            f"{MAX_ALIAS_EXPANSION:,} values; write the values out or use fewer levels of aliases"
        ]

    def test_a_recursive_alias(self, tmp_path):
        files = gateway_files(tmp_path)
        files.write_policy("bomb", "x: &a [1, *a]\n")
        assert _problems(tmp_path, files) == [
            "policies/bomb.yaml (top level): an alias refers to its own anchor "
            "(a recursive structure)"
        ]

    def test_modest_aliases_are_fine(self, tmp_path):
        files = gateway_files(tmp_path)
        files.write_policy(
            "people",
            textwrap.dedent(
                f"""\
                users:
                  alice: &person
                    password_hash: "{password_hash()}"
                    grants: {{console: viewer}}
                  bob: *person
                roles:
                  viewer: {{allow: [{{methods: ["GET"]}}]}}
                  writer: {{allow: [{{methods: ["*"]}}]}}
                service_accounts: {{}}
                """
            ),
        )
        result = load(files.config_file)
        assert result.snapshot is not None, [str(p) for p in result.report.problems]
        assert set(result.snapshot.users) == {"alice", "bob"}


class TestRootCauseOnce:
    """One broken file is reported once, not as errors about the files that refer to it."""

    def test_a_syntax_error_does_not_cascade(self, tmp_path):
        files = gateway_files(tmp_path)
        people = files.policies["people"]
        files.write_policy("people", {k: v for k, v in people.items() if k != "roles"})
        files.write_policy("roles", "roles:\n  viewer: {allow: [\n")
        problems = _problems(tmp_path, files)
        assert len(problems) == 1, problems
        assert problems[0].startswith("policies/roles.yaml:")
        assert "not valid YAML" in problems[0]


class TestNames:
    """One name, one principal: no case variants, no user and service account alike."""

    def test_user_names_differ_only_in_case(self, tmp_path):
        user = {"password_hash": password_hash(), "grants": {"console": "viewer"}}
        files = gateway_files(tmp_path, users={"alice": user, "Alice": user})
        problems = _problems(tmp_path, files)
        assert [p.split(" ", 1)[1] for p in problems] == [
            "users.Alice: the same name as user 'alice' (names are compared without case; "
            "backends would see one identity)"
        ]

    def test_a_service_account_named_like_a_user(self, tmp_path):
        accounts = {"ALICE": _account()["sync"]}
        files = gateway_files(tmp_path, accounts=accounts)
        problems = _problems(tmp_path, files)
        assert [p.split(" ", 1)[1] for p in problems] == [
            "service_accounts.ALICE: the same name as user 'alice' (names are compared "
            "without case; backends would see one identity)"
        ]
