"""`gateway run --workers N`: processes share the port, each reloads on its own, and the audit
trail written by all of them stays verifiable."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from tests.factories import api_key, client, echo_app, gateway_files, gateway_process, serve

KEY = {"Authorization": f"Bearer {api_key('sync')}"}


class TestWorkers:
    """Two workers behind one port."""

    async def test_two_workers_serve_reload_and_audit(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with gateway_process(files, workers=2) as (url, _proc), client() as http:
                sent = 0
                for _ in range(60):
                    sent += 1
                    # a new connection each time: SO_REUSEPORT spreads connections, not requests
                    fresh = {**KEY, "Connection": "close"}
                    async with http.get(f"{url}/api/x", headers=fresh) as r:
                        assert r.status == 200
                # every worker must pick up the change on its own
                files.write_policy(
                    "access",
                    {
                        "protection": {"enabled": True},
                        "allowlists": {
                            "dashboard": {"enabled": False},
                            "api": {"enabled": True, "entries": [{"ip": "192.0.2.1"}]},
                        },
                    },
                )
                deadline = time.monotonic() + 60  # a bound for a loaded machine, not a claim
                statuses: list[int] = []
                while time.monotonic() < deadline:
                    statuses = []
                    for _ in range(20):
                        sent += 1
                        async with http.get(f"{url}/api/x", headers=KEY) as r:
                            statuses.append(r.status)
                    if set(statuses) == {403}:
                        break
                    await asyncio.sleep(0.2)
                assert set(statuses) == {403}
                async with http.get(f"{url}/_gateway/metrics") as r:
                    metrics = await r.text()
                counted = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith('gateway_requests_total{app="protection-api"')
                )
                assert counted == sent  # the scrape of one worker aggregates both
            await asyncio.sleep(0)
        records = [json.loads(line) for line in files.audit_file.read_text().splitlines()]
        chains = {r["chain"] for r in records}
        assert len(chains) >= 2  # one chain per worker process
        pids_served = {r["chain"] for r in records if r["event"] == "request"}
        assert len(pids_served) == 2  # SO_REUSEPORT spread the connections over both
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "audit",
                "verify",
                "--config",
                str(files.config_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
