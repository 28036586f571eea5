"""`request` records skip structlog's dispatch but not its processors: the line is the same,
byte for byte, and the trail still verifies."""

from __future__ import annotations

import orjson

from gateway.services.audit import AuditLog, verify

KEY = b"k" * 32
FIELDS = {
    "request_id": "7d0c1f6e-2b1c-4f3e-9a61-0c7f0e6a5b21",
    "client_ip": "127.0.0.1",
    "surface": "api",
    "app": "api",
    "principal": "bench",
    "auth": "api-key",
    "decision": "allow",
    "method": "GET",
    "path": "/items/42",
    "status": 200,
    "duration_ms": 1.23,
    "reasons": ["API key of service account 'bench'"],
    "monitor": None,
    "api_key": "never written",
}


def test_direct_path_renders_what_structlog_renders(tmp_path):
    clock = lambda: 1_800_000_000.123  # noqa: E731
    direct = AuditLog(tmp_path / "a.jsonl", KEY, clock=clock)
    through = AuditLog(tmp_path / "b.jsonl", KEY, clock=clock)
    through._chain.id = direct._chain.id
    for _ in range(3):
        direct.record("request", **FIELDS)
        with through._lock:
            through._logger.audit("request", **FIELDS)  # the structlog chain itself
    assert direct._buffer.lines == []  # queued, rendered in a batch
    direct.render_queued()
    assert direct._buffer.lines == through._buffer.lines
    first = orjson.loads(direct._buffer.lines[0])
    assert list(first)[:3] == ["ts", "event", "request_id"]
    assert first["api_key"] == "[redacted]"


def test_trail_of_direct_records_verifies(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, KEY) as audit:
        for i in range(50):
            audit.record("request", **{**FIELDS, "status": 200 + i})
            audit.record("login.success", principal="alice", client_ip="127.0.0.1")
    report = verify([path], KEY)
    assert report.ok, report
    assert report.records == 100


def test_chain_mac_is_hmac_sha256():
    import hashlib
    import hmac

    from gateway.services.audit import _Chain

    for key in (b"k" * 32, b"short", b"x" * 64, b"y" * 100):
        chain = _Chain(key)
        for body in (b"", b"{}", b"z" * 1000):
            assert chain.mac(body) == hmac.new(key, body, hashlib.sha256).hexdigest()


def test_queued_requests_keep_their_time_order_and_values(tmp_path):
    """Rendered later, a request record still has the time it was recorded at, and the file
    keeps the order of the calls whatever the events."""
    now = [1_800_000_000.5]
    audit = AuditLog(tmp_path / "a.jsonl", KEY, clock=lambda: now[0])
    audit.record("request", **{**FIELDS, "reasons": ["first reason"], "request_id": "r1"})
    now[0] += 2
    audit.record("login.success", principal="alice")  # renders the queue first, then itself
    now[0] += 2
    audit.record("request", **{**FIELDS, "request_id": "r2"})
    audit.flush_sync()
    records = [orjson.loads(line) for line in (tmp_path / "a.jsonl").read_bytes().splitlines()]
    assert [r.get("request_id") or r["event"] for r in records] == ["r1", "login.success", "r2"]
    assert records[0]["reasons"] == ["first reason"]
    assert [r["ts"][17:23] for r in records] == ["00.500", "02.500", "04.500"]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert verify([tmp_path / "a.jsonl"], KEY).ok


def test_a_batch_renders_by_itself(tmp_path):
    from gateway.services.audit import RENDER_BATCH

    audit = AuditLog(tmp_path / "a.jsonl", KEY)
    for i in range(RENDER_BATCH - 1):
        audit.record("request", **{**FIELDS, "status": i})
    assert audit._buffer.lines == [] and audit.pending == RENDER_BATCH - 1
    audit.record("request", **FIELDS)
    assert len(audit._buffer.lines) == RENDER_BATCH and audit.pending == RENDER_BATCH
