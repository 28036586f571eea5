"""Request ids are version 4 UUIDs, all different, also across a fork."""

from __future__ import annotations

import os
import uuid

from gateway.web.request_ids import new_request_id


def test_ids_are_uuid4_and_unique():
    ids = [new_request_id() for _ in range(2000)]  # several batches
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_forked_child_draws_its_own():
    new_request_id()  # a batch is half read in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != new_request_id()
