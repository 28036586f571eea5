"""`gateway demo`'s files: a restart keeps what the person edited."""

from __future__ import annotations

from pathlib import Path

from gateway.demo.run import write_demo_files
from gateway.policy.source import load


class TestDemoFiles:
    """The demo writes its example policies once; edits survive a restart."""

    def test_a_restart_keeps_edited_policies(self, tmp_path: Path) -> None:
        key = write_demo_files(tmp_path, 18080, 18081, 18082)
        policies = tmp_path / "policies"
        for name in ("access.yaml", "security.yaml", "people.yaml"):
            edited = (policies / name).read_text() + "# edited by hand\n"
            (policies / name).write_text(edited)
        assert write_demo_files(tmp_path, 18090, 18091, 18092) == key
        for name in ("access.yaml", "security.yaml", "people.yaml"):
            assert (policies / name).read_text().endswith("# edited by hand\n"), name
        assert "18090" in (tmp_path / "gateway.yaml").read_text()  # the new ports are in use
        assert load(tmp_path / "gateway.yaml").ok
