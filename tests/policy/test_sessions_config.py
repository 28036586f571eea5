"""`sessions:` in gateway.yaml: where sessions live (docs/configuration.md)."""

from __future__ import annotations

import pytest

from gateway.policy.source import load
from tests.factories import gateway_files


def _load_sessions(tmp_path, sessions: dict):  # type: ignore[no-untyped-def]
    files = gateway_files(tmp_path, extra_config={"sessions": sessions})
    result = load(files.config_file)
    problems = [str(p).replace(f"{tmp_path}/", "") for p in result.report.problems]
    return result, problems


@pytest.mark.parametrize(
    "url",
    ["state", "redis://127.0.0.1:6379/0", "redis://cache.internal", "rediss://cache:6380/2"],
)
def test_accepted_stores(tmp_path, url):
    result, problems = _load_sessions(tmp_path, {"store": url, "password_file": "redis.pw"})
    assert problems == []
    assert result.snapshot is not None
    assert result.snapshot.config.sessions.store == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("memcached://x:11211", "expected 'state' or redis://host:6379/0"),
        ("redis://", "expected 'state' or redis://host:6379/0"),
        ("redis://h:99999/0", "not a valid redis URL"),
        ("redis://h:6379/zero", "the path of a redis URL is a database number, got 'zero'"),
        ("redis://:hunter2@h:6379/0", "put the redis password in sessions.password_file"),
    ],
)
def test_refused_stores(tmp_path, url, why):
    result, problems = _load_sessions(tmp_path, {"store": url})
    assert result.snapshot is None
    assert len(problems) == 1 and "sessions.store" in problems[0] and why in problems[0]
    assert "hunter2" not in problems[0]


def test_key_prefix_is_checked(tmp_path):
    result, problems = _load_sessions(tmp_path, {"store": "redis://h/0", "key_prefix": "a b"})
    assert result.snapshot is None and "sessions.key_prefix" in problems[0]
