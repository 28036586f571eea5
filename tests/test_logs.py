"""Operator logs: an exception is logged as its type and stack, never its message."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
from gateway.logs import configure_logging
import structlog
configure_logging(json=True)
log = structlog.get_logger("gateway")
def parse(header):
    raise ValueError(f"bad header value {header!r}")
try:
    parse("Bearer gwk_live_SECRET_KEY_123")
except ValueError:
    log.exception("unhandled_error", path="/api/x")
"""


class TestExceptionLines:
    """A client's bytes quoted in an exception message never reach the log."""

    def test_type_and_stack_without_the_message(self):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "SECRET_KEY" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        record = json.loads(line)
        assert record["event"] == "unhandled_error"
        assert record["error"] == "ValueError"
        assert any(frame.endswith(" in parse") for frame in record["stack"])
        assert "exception" not in record
