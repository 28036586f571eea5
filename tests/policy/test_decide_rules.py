"""Role rules against the ways backends read a request differently (docs/http.md, request path step
5): deny rules match paths case-insensitively, and every method override must be allowed too."""

from __future__ import annotations

import pytest

from gateway.policy import decide
from gateway.policy.source import load
from tests.factories import gateway_files


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    files = gateway_files(tmp_path_factory.mktemp("rules"))
    files.policies["people"]["roles"]["mixed"] = {
        "allow": [{"methods": ["GET"], "path": "/Reports/"}],
        "deny": [{"methods": ["GET"], "path": "/Reports/Secret/"}],
    }
    files.write()
    result = load(files.config_file)
    assert result.snapshot is not None
    return result.snapshot


CASE_TABLE = [
    # role, method, path, allowed
    ("editor", "GET", "/SETTINGS/users", False),
    ("editor", "GET", "/Settings", False),
    ("editor", "POST", "/sEtTiNgS/x", False),
    ("editor", "GET", "/settingsx", True),
    ("editor", "GET", "/SETTINGSX/y", True),
    ("mixed", "GET", "/Reports/1", True),
    ("mixed", "GET", "/reports/1", False),  # allow rules stay exact: fail closed
    ("mixed", "GET", "/Reports/secret/1", False),  # the deny prefix folds both ways
    ("mixed", "GET", "/Reports/SECRET", False),
]


@pytest.mark.parametrize(("role", "method", "path", "allowed"), CASE_TABLE)
def test_deny_rules_ignore_case(snapshot, role, method, path, allowed):
    assert decide.check_role(snapshot.roles[role], method, path).allowed is allowed


OVERRIDE_TABLE = [
    # role, method, overrides, allowed
    ("viewer", "GET", (), True),
    ("viewer", "GET", ("GET",), True),
    ("viewer", "GET", ("HEAD",), True),
    ("viewer", "GET", ("DELETE",), False),
    ("viewer", "POST", ("GET",), False),  # the request's own method must be allowed as well
    ("viewer", "GET", ("GET", "PUT"), False),
    ("viewer", "GET", ("FOO",), False),
    ("admin", "GET", ("DELETE",), True),
]


@pytest.mark.parametrize(("role", "method", "overrides", "allowed"), OVERRIDE_TABLE)
def test_overrides_must_be_allowed(snapshot, role, method, overrides, allowed):
    app = snapshot.apps["console"]
    verdict, _ = decide.authorize(snapshot, {"console": role}, app, method, "/x", overrides)
    assert verdict.allowed is allowed
    if not allowed and overrides and method == "GET":
        assert "method override" in verdict.reason


def test_override_on_denied_path_is_denied(snapshot):
    app = snapshot.apps["console"]
    verdict, _ = decide.authorize(
        snapshot, {"console": "editor"}, app, "GET", "/Settings/x", ("POST",)
    )
    assert not verdict.allowed


EXTRACT_TABLE = [
    # header values, raw query, methods found
    ([], "", ()),
    ([], "a=1&b=2", ()),
    (["delete"], "", ("DELETE",)),
    (["PUT, DELETE"], "", ("PUT", "DELETE")),
    ([], "_method=DELETE", ("DELETE",)),
    ([], "x=1&_method=patch&y=2", ("PATCH",)),
    ([], "_%6Dethod=delete", ("DELETE",)),
    ([], "_METHOD=put", ("PUT",)),
    ([], "%5Fmethod=put", ("PUT",)),
    ([], "_method=%44ELETE", ("DELETE",)),
    ([], "_method=", ()),
    ([], "method=DELETE", ()),  # not an override any framework reads
    (["GET"], "_method=GET", ("GET",)),
]


@pytest.mark.parametrize(("headers", "query", "expected"), EXTRACT_TABLE)
def test_method_overrides_found(headers, query, expected):
    assert decide.method_overrides(headers, query) == expected
