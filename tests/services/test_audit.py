"""The hash-chained audit trail: writing, chaining, durability, verification and tail."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import re
import subprocess
import sys
import textwrap
import time
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from gateway.services.audit import (
    BASE_FIELDS,
    CHAIN_FIELDS,
    AuditLog,
    follow,
    tail,
    verify,
)

KEY = b"audit-test-key-0123456789abcdef!"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def read_records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_records(path: Path, n: int, **fields: Any) -> AuditLog:
    """n `request` records through a synchronous AuditLog; returns it (closed)."""
    with AuditLog(path, KEY) as audit:
        for i in range(n):
            audit.record("request", request_id=f"r{i + 1}", status=200, **fields)
    return audit


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Poll until `predicate()`; the bound is generous (a loaded machine), not a claim."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def line_count(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


class TestRecordFields:
    """Every record has the base fields first, in contract order, with null where not given."""

    def test_base_fields_present_and_null(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        with AuditLog(path, KEY) as audit:
            audit.record("policy.reloaded", files=["access.yaml"])
        (record,) = read_records(path)
        assert list(record)[: len(BASE_FIELDS)] == list(BASE_FIELDS)
        assert TS.match(record["ts"])
        assert record["event"] == "policy.reloaded"
        assert all(record[name] is None for name in BASE_FIELDS[2:])
        assert record["files"] == ["access.yaml"]

    def test_given_fields_keep_the_order_and_extras_follow(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        with AuditLog(path, KEY) as audit:
            audit.record(
                "request",
                duration_ms=3.5,
                decision="deny:forbidden",
                method="GET",
                principal="alice",
                request_id="r1",
                client_ip="203.0.113.10",
                surface="dashboard",
                app="console",
                auth="password+totp",
                path="/x",
                status=403,
            )
        (record,) = read_records(path)
        assert list(record) == [
            *BASE_FIELDS,
            "duration_ms",
            "method",
            "path",
            "status",
            *CHAIN_FIELDS,
        ]
        assert record["decision"] == "deny:forbidden"
        assert record["principal"] == "alice"

    def test_timestamp_is_utc_with_milliseconds(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        with AuditLog(path, KEY, clock=lambda: 1700000000.0429) as audit:
            audit.record("request")
        assert read_records(path)[0]["ts"] == "2023-11-14T22:13:20.042Z"

    def test_callers_cannot_set_the_log_own_fields(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        with AuditLog(path, KEY) as audit:
            audit.record("request", ts="1999", seq=42, chain="mine", prev="x", hash="y")
        (record,) = read_records(path)
        assert record["seq"] == 1
        assert record["chain"] == audit.chain
        assert record["prev"] is None
        assert record["ts"] != "1999"
        assert list(record)[-4:] == list(CHAIN_FIELDS)

    def test_values_json_cannot_hold_are_coerced_not_lost(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        with AuditLog(path, KEY) as audit:
            audit.record("request", path="/caf\udce9", weird={1: {2, 3}}, big=2**70)
        (record,) = read_records(path)
        assert record["path"] == "/caf\\udce9"
        assert record["weird"] == {"1": [2, 3]}
        assert record["big"] == str(2**70)
        assert verify(path, KEY).ok

    def test_a_record_that_cannot_be_rendered_is_logged_not_raised(self, tmp_path: Path) -> None:
        class Unprintable:
            def __str__(self) -> str:
                raise RuntimeError("no")

        path = tmp_path / "audit.jsonl"
        with capture_logs() as logs, AuditLog(path, KEY) as audit:
            audit.record("request", thing=Unprintable())
            audit.record("request", status=200)
        (failure,) = logs
        assert (failure["event"], failure["audit_event"]) == ("audit_record_failed", "request")
        assert [r["seq"] for r in read_records(path)] == [1], "no gap in the chain"

    def test_the_app_log_configuration_does_not_see_audit_records(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        with capture_logs() as app_logs, AuditLog(path, KEY) as audit:
            audit.record("login.success", principal="alice")
        assert app_logs == []
        assert read_records(path)[0]["event"] == "login.success"


class TestChain:
    """Each record carries chain, seq and prev, and an HMAC over its canonical form."""

    def test_chain_fields(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 3)
        records = read_records(path)
        assert [r["seq"] for r in records] == [1, 2, 3]
        assert {r["chain"] for r in records} == {audit.chain}
        assert re.fullmatch(r"[0-9a-f]{12}", audit.chain)
        assert records[0]["prev"] is None
        assert records[1]["prev"] == records[0]["hash"]
        assert records[2]["prev"] == records[1]["hash"]

    def test_hash_is_hmac_sha256_over_the_sorted_record_without_hash(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 1)
        (record,) = read_records(path)
        claimed = record.pop("hash")
        body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        assert claimed == hmac.new(KEY, body, sha256).hexdigest()

    def test_every_audit_log_starts_its_own_chain(self, tmp_path: Path) -> None:
        assert AuditLog(tmp_path / "a", KEY).chain != AuditLog(tmp_path / "a", KEY).chain

    def test_an_empty_key_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="non-empty bytes"):
            AuditLog(tmp_path / "a", b"")


class TestRedaction:
    """Fields named like secrets never reach the file, nested ones included."""

    def test_secret_named_fields_are_redacted(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        form = {"username": "alice", "password": "hunter2", "new_password": "n3w-Secret"}
        with AuditLog(path, KEY) as audit:
            audit.record(
                "login.failure",
                principal="alice",
                password="hunter2",
                code="123456",
                totp="654321",
                key="k-live-1",
                api_key="ak-live-2",
                secret="s3",
                session_id="sess-4",
                Token="tok-5",
                cookie="gw_session=6",
                recovery_code="rc-7",
                form=form,
                attempts=[{"code": "111111"}],
                status_code=401,
                key_sha256="9f86d0",
                session_hash="ab12",
                reason=None,
            )
        raw = path.read_text()
        for secret in ("hunter2", "n3w-Secret", "123456", "654321", "k-live-1", "ak-live-2"):
            assert secret not in raw
        for secret in ("sess-4", "tok-5", "gw_session=6", "rc-7", "111111", '"s3"'):
            assert secret not in raw
        (record,) = read_records(path)
        for name in ("password", "code", "totp", "key", "api_key", "secret", "session_id"):
            assert record[name] == "[redacted]"
        assert record["Token"] == record["cookie"] == record["recovery_code"] == "[redacted]"
        assert record["form"] == {
            "username": "alice",
            "password": "[redacted]",
            "new_password": "[redacted]",
        }
        assert record["attempts"] == [{"code": "[redacted]"}]
        assert (record["status_code"], record["key_sha256"]) == (401, "9f86d0")
        assert record["session_hash"] == "ab12"
        assert record["reason"] is None
        assert form["password"] == "hunter2", "the caller's own dict is left alone"
        assert verify(path, KEY).ok


class TestVerify:
    """verify() accepts an untouched file and names the line and the fault of a tampered one."""

    def test_untouched_file_verifies(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 5)
        report = verify(path, KEY)
        assert (report.ok, report.records, report.chains, report.problems) == (True, 5, 1, [])

    def test_wrong_key_is_named_once(self, tmp_path: Path) -> None:
        # Not "every line forged": a trail none of whose records verifies was written with
        # another key.
        path = tmp_path / "audit.jsonl"
        write_records(path, 2)
        report = verify(path, b"another key")
        assert not report.ok
        assert report.problems == [
            "none of the 2 records verifies with this secret key: the key does not match "
            "this trail (check secret_key_file or GATEWAY_SECRET_KEY)"
        ]

    def test_edited_line_is_detected(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 5)
        lines = lines_of(path)
        assert b'"status":200' in lines[2]
        lines[2] = lines[2].replace(b'"status":200', b'"status":500')  # hash left as it was
        path.write_bytes(b"".join(lines))
        report = verify(path, KEY)
        assert not report.ok
        assert report.problems == ["line 3: hash mismatch (record edited or forged)"]

    def test_non_ascii_hash_is_a_mismatch_not_a_crash(self, tmp_path: Path) -> None:
        # hmac.compare_digest raises TypeError on non-ASCII str: hashes are compared as bytes.
        path = tmp_path / "audit.jsonl"
        write_records(path, 3)
        lines = lines_of(path)
        record = orjson.loads(lines[1])
        record["hash"] = "é" * 64
        lines[1] = orjson.dumps(record) + b"\n"
        path.write_bytes(b"".join(lines))
        report = verify(path, KEY)
        assert report.problems[0] == "line 2: hash mismatch (record edited or forged)"

    def test_edited_first_line_is_one_problem(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 3)
        lines = lines_of(path)
        lines[0] = lines[0].replace(b'"request_id":"r1"', b'"request_id":"r9"')
        path.write_bytes(b"".join(lines))
        report = verify(path, KEY)
        assert report.problems == ["line 1: hash mismatch (record edited or forged)"]
        assert (report.records, report.chains) == (3, 1)

    def test_forged_line_of_a_made_up_chain_is_not_counted_as_a_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 1)
        forged = {**read_records(path)[0], "chain": "0badc0ffee00", "hash": "0" * 64}
        path.write_bytes(path.read_bytes() + orjson.dumps(forged) + b"\n")
        report = verify(path, KEY, [("0badc0ffee00", 1, "0" * 64)])
        assert report.chains == 1
        assert report.problems == [
            "line 2: hash mismatch (record edited or forged)",
            "chain 0badc0ffee00: the state store saw seq 1 but the file has no record of "
            "this chain (lines cut off the end, or the file replaced)",
        ]

    def test_edited_line_with_a_made_up_hash_is_one_problem(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 4)
        records = read_records(path)
        records[1]["principal"] = "mallory"
        records[1]["hash"] = hmac.new(b"guess", b"x", sha256).hexdigest()
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        assert verify(path, KEY).problems == ["line 2: hash mismatch (record edited or forged)"]

    def test_deleted_line_is_detected(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 5)
        lines = lines_of(path)
        del lines[2]
        path.write_bytes(b"".join(lines))
        assert verify(path, KEY).problems == [
            f"line 3: chain {audit.chain}: seq 4 follows seq 2 (1 record missing or reordered)"
        ]

    def test_deleted_first_line_is_detected(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 3)
        path.write_bytes(b"".join(lines_of(path)[2:]))
        assert verify(path, KEY).problems == [
            f"line 1: chain {audit.chain}: starts at seq 3, not 1 "
            "(earlier lines missing, or purged by retention)"
        ]

    def test_swapped_lines_are_detected(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 5)
        lines = lines_of(path)
        lines[1], lines[2] = lines[2], lines[1]
        path.write_bytes(b"".join(lines))
        assert verify(path, KEY).problems == [
            f"line 2: chain {audit.chain}: seq 3 follows seq 1 (1 record missing or reordered)",
            f"line 3: chain {audit.chain}: seq 2 follows seq 3 (duplicate or reordered)",
        ]

    def test_inserted_forged_line_is_detected(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 4)
        records = read_records(path)
        forged = {**records[2], "principal": "mallory", "prev": records[1]["hash"]}
        forged.pop("hash")
        forged["hash"] = hmac.new(b"not the key", orjson.dumps(forged), sha256).hexdigest()
        lines = lines_of(path)
        lines.insert(2, orjson.dumps(forged) + b"\n")
        path.write_bytes(b"".join(lines))
        assert verify(path, KEY).problems == ["line 3: hash mismatch (record edited or forged)"]

    def test_duplicated_line_is_detected(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 3)
        lines = lines_of(path)
        path.write_bytes(b"".join([*lines, lines[1]]))
        assert verify(path, KEY).problems == [
            f"line 4: chain {audit.chain}: seq 2 follows seq 3 (duplicate or reordered)"
        ]

    def test_garbage_lines_are_named(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 3)
        lines = lines_of(path)
        lines[1] = b'{"ts": "2024-01-01T00:00:00.000Z", "event": "req\n'
        path.write_bytes(b"".join([*lines, b"\n", b'{"event": "request"}\n']))
        assert verify(path, KEY).problems == [
            "line 2: not JSON",
            f"line 3: chain {audit.chain}: seq 3 follows seq 1 (1 record missing or reordered)",
            "line 4: empty line",
            "line 5: not an audit record (no chain, seq, prev or hash)",
        ]

    def test_empty_file_verifies(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        path.touch()
        assert verify(path, KEY) == verify(path, KEY, ()) and verify(path, KEY).ok


class TestVerifyWithHeads:
    """Lines cut off the end are invisible in the file alone; the store's heads reveal them."""

    async def test_lines_cut_off_the_end(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        heads: list[tuple[str, int, str]] = []

        async def sink(chain: str, seq: int, digest: str) -> None:
            heads.append((chain, seq, digest))

        audit = AuditLog(path, KEY, head_sink=sink)
        await audit.start()
        for i in range(5):
            audit.record("request", request_id=f"r{i}")
        await audit.close()
        assert heads[-1][1] == 5
        path.write_bytes(b"".join(lines_of(path)[:3]))

        without_heads = verify(path, KEY)
        assert without_heads.ok, "a file alone cannot tell a cut end from a clean stop"
        assert verify(path, KEY, heads[-1:]).problems == [
            f"chain {audit.chain}: the state store saw seq 5 but the file ends at seq 3 "
            "(lines cut off the end)"
        ]

    def test_whole_chain_cut_off(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 2)
        head = audit.written_head
        assert head is not None
        path.write_bytes(b"")
        assert verify(path, KEY, [head]).problems == [
            f"chain {audit.chain}: the state store saw seq 2 but the file has no record of "
            "this chain (lines cut off the end, or the file replaced)"
        ]

    def test_heads_of_an_intact_file_agree(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 3)
        assert audit.written_head is not None
        assert verify(path, KEY, [audit.written_head]).ok

    def test_rewritten_record_at_the_head_is_detected(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = write_records(path, 2)
        head = audit.written_head
        assert head is not None
        assert verify(path, KEY, [(head[0], head[1], "0" * 64)]).problems == [
            f"chain {audit.chain}: seq 2 on line 2 is not the record the state store saw "
            "(file rewritten)"
        ]


WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from gateway.services.audit import AuditLog

    path, ready, go, n = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])

    async def main():
        audit = AuditLog(path, bytes.fromhex(sys.argv[5]), flush_interval=0.002)
        await audit.start()
        ready.touch()
        while not go.exists():
            await asyncio.sleep(0.002)
        for i in range(n):
            audit.record("request", request_id=f"{audit.chain}-{i}", status=200)
            if i % 4 == 0:
                await asyncio.sleep(0.001)
        await audit.close()

    asyncio.run(main())
    """
)

FORK = textwrap.dedent(
    """
    import os, sys
    from gateway.services.audit import AuditLog

    audit = AuditLog(sys.argv[1], bytes.fromhex(sys.argv[2]))
    audit.record("request", request_id="parent-before-fork")
    pid = os.fork()
    if pid == 0:
        audit.record("request", request_id="child")
        audit.close_sync()
        os._exit(0)
    os.waitpid(pid, 0)
    audit.record("request", request_id="parent-after-fork")
    audit.close_sync()
    """
)


class TestSeveralWriters:
    """Several processes append to one file, each with its own chain, and the file verifies."""

    def test_two_instances_interleave_and_verify(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        first, second = AuditLog(path, KEY), AuditLog(path, KEY)
        for i in range(6):
            (first if i % 2 else second).record("request", request_id=str(i))
            first.flush_sync()
            second.flush_sync()
        chains = [r["chain"] for r in read_records(path)]
        assert chains == [second.chain, first.chain] * 3
        report = verify(path, KEY)
        assert (report.ok, report.records, report.chains) == (True, 6, 2)

    def test_worker_processes_interleave_and_verify(self, tmp_path: Path) -> None:
        path, go, per_worker = tmp_path / "audit.jsonl", tmp_path / "go", 300
        readies = [tmp_path / f"ready-{i}" for i in range(3)]
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, *map(str, (path, ready, go, per_worker)), KEY.hex()]
            )
            for ready in readies
        ]
        deadline = time.monotonic() + 30
        while not all(r.exists() for r in readies):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.01)
        go.touch()
        assert [w.wait(timeout=60) for w in workers] == [0, 0, 0]

        report = verify(path, KEY)
        assert (report.ok, report.records, report.chains) == (True, 900, 3), report.problems
        chains = [r["chain"] for r in read_records(path)]
        switches = sum(a != b for a, b in itertools.pairwise(chains))
        assert switches >= 3, "the workers' lines did not interleave"

    def test_a_forked_child_starts_its_own_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        subprocess.run([sys.executable, "-c", FORK, str(path), KEY.hex()], check=True)
        records = read_records(path)
        assert [r["request_id"] for r in records] == [
            "child",
            "parent-before-fork",
            "parent-after-fork",
        ]
        assert records[0]["chain"] != records[1]["chain"] == records[2]["chain"]
        assert records[0]["seq"] == 1
        report = verify(path, KEY)
        assert (report.ok, report.records, report.chains) == (True, 3, 2)


class TestBackgroundWriter:
    """The writer task batches records to the file and flushes everything on close."""

    async def test_records_wait_in_memory_until_close(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = AuditLog(path, KEY, flush_interval=30)
        await audit.start()
        for i in range(5):
            audit.record("request", request_id=str(i))
        await asyncio.sleep(0.05)
        assert line_count(path) == 0
        assert audit.pending == 5
        await audit.close()
        assert line_count(path) == 5
        assert audit.pending == 0
        assert verify(path, KEY).ok

    async def test_flush_true_writes_promptly(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = AuditLog(path, KEY, flush_interval=30)
        await audit.start()
        audit.record("request")
        await asyncio.sleep(0.2)
        assert line_count(path) == 0, "without flush=True the 30 s interval applies"
        audit.record("login.failure", principal="alice", flush=True)
        await wait_for(lambda: line_count(path) == 2)
        await audit.close()

    async def test_records_are_written_every_flush_interval(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        async with AuditLog(path, KEY, flush_interval=0.02) as audit:
            audit.record("request")
            await wait_for(lambda: line_count(path) == 1)

    async def test_a_full_buffer_is_written_without_waiting(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        async with AuditLog(path, KEY, flush_interval=30, flush_bytes=1000) as audit:
            for _ in range(4):
                audit.record("request", note="x" * 300)
            await wait_for(lambda: line_count(path) >= 3)

    async def test_flush_true_from_another_thread_wakes_the_writer(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        async with AuditLog(path, KEY, flush_interval=30) as audit:
            await asyncio.to_thread(audit.record, "totp.reset", principal="alice", flush=True)
            await wait_for(lambda: line_count(path) == 1)

    async def test_close_still_writes_when_shutdown_cancelled_the_writer(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        audit = AuditLog(path, KEY, flush_interval=30)
        await audit.start()
        audit.record("request")
        assert audit._task is not None
        audit._task.cancel()
        await asyncio.sleep(0)
        await audit.close()
        assert line_count(path) == 1

    def test_without_a_loop_flush_sync_writes(self, tmp_path: Path) -> None:
        path = tmp_path / "sub" / "dir" / "audit.jsonl"
        audit = AuditLog(path, KEY)
        audit.record("session.revoked", principal="alice")
        assert not path.exists()
        assert audit.flush_sync() is True
        assert read_records(path)[0]["event"] == "session.revoked"
        audit.record("session.revoked", principal="bob")
        assert audit.close_sync() is True
        assert verify(path, KEY).records == 2


class TestRotation:
    """A renamed file is noticed at the next fsync and the chain goes on in a new file."""

    def test_rotated_files_verify_as_one_stream(self, tmp_path: Path) -> None:
        path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
        audit = AuditLog(path, KEY)
        audit.record("request", request_id="a")
        audit.flush_sync()
        path.rename(rotated)
        audit.record("request", request_id="b")  # still the open file, then it is noticed
        audit.flush_sync()
        audit.record("request", request_id="c")
        audit.close_sync()

        assert [r["request_id"] for r in read_records(rotated)] == ["a", "b"]
        assert [r["request_id"] for r in read_records(path)] == ["c"]
        assert verify(path, KEY).problems == [
            f"line 1: chain {audit.chain}: starts at seq 3, not 1 "
            "(earlier lines missing, or purged by retention)"
        ]
        both = tmp_path / "both.jsonl"
        both.write_bytes(rotated.read_bytes() + path.read_bytes())
        assert verify(both, KEY).ok


class TestWriteFailure:
    """A file that cannot be written never breaks record(); records wait in memory and retry."""

    def test_record_does_not_raise_and_records_are_kept(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        path.mkdir()  # a directory where the file should be
        audit = AuditLog(path, KEY)
        with capture_logs() as logs:
            audit.record("login.failure", principal="alice")
            assert audit.flush_sync() is False
            audit.record("login.failure", principal="bob")
        assert audit.pending == 2
        assert [(e["event"], e["log_level"]) for e in logs] == [("audit_write_failed", "error")]
        assert logs[0]["path"] == str(path)

        path.rmdir()
        with capture_logs() as logs:
            assert audit.flush_sync() is True
        assert [e["event"] for e in logs] == ["audit_write_recovered"]
        assert [r["principal"] for r in read_records(path)] == ["alice", "bob"]
        assert verify(path, KEY).ok

    async def test_background_writer_survives_and_retries(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        path.mkdir()
        audit = AuditLog(path, KEY, flush_interval=0.01)
        with capture_logs() as logs:
            await audit.start()
            audit.record("login.failure", principal="alice", flush=True)
            await wait_for(lambda: any(e["event"] == "audit_write_failed" for e in logs))
            assert audit.pending == 1
            path.rmdir()
            await wait_for(lambda: line_count(path) == 1)
            await audit.close()
        events = [e["event"] for e in logs]
        assert events == ["audit_write_failed", "audit_write_recovered"], "logged once, not 100x"

    async def test_close_reports_records_it_could_not_write(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        path.mkdir()
        audit = AuditLog(path, KEY)
        with capture_logs() as logs:
            await audit.start()
            audit.record("request")
            await audit.close()
        assert "audit_records_unwritten_at_close" in [e["event"] for e in logs]

    def test_buffer_is_bounded_and_drops_the_oldest_visibly(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        path.mkdir()
        audit = AuditLog(path, KEY, max_buffer_bytes=2000)
        with capture_logs() as logs:
            for i in range(20):
                audit.record("request", request_id=str(i))
        assert audit.dropped > 0
        assert audit.pending == 20 - audit.dropped
        dropped_logs = [e for e in logs if e["event"] == "audit_records_dropped"]
        assert len(dropped_logs) == 1 and dropped_logs[0]["log_level"] == "error"

        path.rmdir()
        assert audit.flush_sync() is True
        first = audit.dropped + 1
        assert read_records(path)[0]["seq"] == first
        assert verify(path, KEY).problems == [
            f"line 1: chain {audit.chain}: starts at seq {first}, not 1 "
            "(earlier lines missing, or purged by retention)"
        ]


class TestHeadSink:
    """The chain head goes to the sink only once its line is in the file, and again at close."""

    async def test_sink_gets_the_last_written_head(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        calls: list[tuple[str, int, str]] = []
        in_file_when_called: list[bool] = []

        async def sink(chain: str, seq: int, digest: str) -> None:
            calls.append((chain, seq, digest))
            in_file_when_called.append(read_records(path)[seq - 1]["hash"] == digest)

        audit = AuditLog(path, KEY, head_sink=sink, flush_interval=0.01, fsync_interval=0.05)
        await audit.start()
        for _ in range(3):
            audit.record("request")
        await wait_for(lambda: bool(calls))
        assert calls[-1][1] == 3
        for _ in range(2):
            audit.record("request")
        await audit.close()

        last = read_records(path)[-1]
        assert calls[-1] == (audit.chain, 5, last["hash"])
        assert all(in_file_when_called)
        assert len(calls) == len(set(calls)), "an unchanged head is not sent again"

    async def test_sink_errors_are_logged_not_raised(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"

        async def sink(chain: str, seq: int, digest: str) -> None:
            raise ConnectionError("state store down")

        audit = AuditLog(path, KEY, head_sink=sink)
        with capture_logs() as logs:
            await audit.start()
            audit.record("request")
            await audit.close()
        (failure,) = [e for e in logs if e["event"] == "audit_head_sink_failed"]
        assert failure["seq"] == 1 and "state store down" in failure["error"]
        assert line_count(path) == 1


class TestTail:
    """tail() returns the last n records cheaply; follow() keeps yielding new ones."""

    def test_last_n_records(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 5)
        assert [r["request_id"] for r in tail(path, 2)] == ["r4", "r5"]
        assert [r["request_id"] for r in tail(path, 50)] == [f"r{i}" for i in range(1, 6)]
        assert tail(path, 0) == []

    def test_reads_across_blocks_of_a_big_file(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 400, note="x" * 500)  # ~350 KiB: several 64 KiB blocks
        assert [r["seq"] for r in tail(path, 300)] == list(range(101, 401))

    def test_broken_lines_are_shown_not_hidden(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_records(path, 1)
        with path.open("ab") as f:
            f.write(b"garbage\n{half a line")
        records = tail(path, 5)
        assert records[-1] == {"_unparsed": "garbage"}, "the unfinished last line is left out"
        assert len(records) == 2

    def test_follow_yields_new_records(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        audit = AuditLog(path, KEY)
        for i in range(3):
            audit.record("request", request_id=str(i))
        audit.flush_sync()
        records = follow(path, 2, poll_interval=0.01)
        assert [next(records)["request_id"] for _ in range(2)] == ["1", "2"]
        audit.record("login.success", principal="alice")
        audit.flush_sync()
        assert next(records)["event"] == "login.success"
        records.close()
