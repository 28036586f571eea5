"""Hot reload against bad input, on a real gateway with its real file watcher and poller: a
value that cannot be compiled or a policy entry that is not a readable file is rejected (logged,
audited once, shown in readyz), the last good policy stays in force, and watching goes on."""

from __future__ import annotations

import asyncio
import json
import time

from tests.factories import client, echo_app, gateway_files, running_gateway, serve
from tests.web.test_reload import KEY, allowlist, wait_generation
from tests.web.test_signin import audit_records


async def wait_for(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def rejections(files) -> list[dict]:  # type: ignore[no-untyped-def]
    return [r for r in audit_records(files) if r["event"] == "policy.rejected"]


class TestRejectedAndStillWatching:
    """Whatever a file holds, the watcher survives and the last good policy serves."""

    async def test_an_uncompilable_value_then_a_fix(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw, client() as http:
                start = gw.holder.current.generation
                people = dict(files.policies["people"])
                accounts = {**people["service_accounts"]}
                accounts["sync"] = {**accounts["sync"], "expires": "9999-12-31"}
                files.write_policy("people", {**people, "service_accounts": accounts})
                await wait_for(lambda: gw.holder.rejected is not None, "not rejected")
                await asyncio.sleep(2.5)  # the poller's round: it must not report it again
                found = rejections(files)
                assert len(found) == 1, found
                assert any("service_accounts.sync.expires" in e for e in found[0]["errors"])
                async with http.get(f"{gw.url}/_gateway/readyz") as r:
                    ready = await r.json()
                assert r.status == 200
                assert any("9999-12-31" in e for e in ready["policy"]["rejected"]), ready
                async with http.get(f"{gw.url}/api/x", headers=KEY) as r:
                    assert r.status == 200  # the last good policy serves

                # The watcher is alive: a fix is picked up (the very policy in force, so the
                # snapshot stays, and the rejection is over).
                files.write_policy("people", people)
                await wait_for(lambda: gw.holder.rejected is None, "the fix was not seen")
                assert gw.holder.current.generation == start

    async def test_a_policy_file_replaced_by_a_dangling_link_keeps_its_rules(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(
                tmp_path, api_upstream=backend, allowlists=allowlist(True, "127.0.0.1")
            )
            files.write_policy("access", allowlist(True, "127.0.0.1"))
            async with running_gateway(files) as gw:
                start = gw.holder.current.generation
                access = tmp_path / "policies" / "access.yaml"
                access.unlink()
                access.symlink_to(tmp_path / "mounted" / "access.yaml")  # what a bad mount leaves
                await wait_for(lambda: gw.holder.rejected is not None, "not rejected")
                errors = [str(p) for p in gw.holder.rejected.report.errors]
                assert errors == [
                    f"{tmp_path}/policies/access.yaml (top level): is a symbolic link to "
                    f"{tmp_path}/mounted/access.yaml, which does not exist"
                ], errors
                # Fail closed: the allowlist is still enforced.
                async with client("127.0.0.2") as http:
                    async with http.get(f"{gw.url}/api/x", headers=KEY) as r:
                        assert r.status == 403
                assert gw.holder.current.generation == start
                found = rejections(files)
                assert len(found) == 1 and "symbolic link" in json.dumps(found[0])
                # The mount comes back: the reload goes through.
                (tmp_path / "mounted").mkdir()
                (tmp_path / "mounted" / "access.yaml").write_text(
                    json.dumps(allowlist(True, "127.0.0.1", "127.0.0.2"))
                )
                await wait_generation(gw, start)
                async with client("127.0.0.2") as http:
                    async with http.get(f"{gw.url}/api/x", headers=KEY) as r:
                        assert r.status == 200
