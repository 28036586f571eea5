"""Each event of section 7.1 mails exactly what it should, to the right people: a running
gateway, real HTTP, real edits of its policy files, a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.demo.mailsink import SinkHandler
from tests.factories import (
    GatewayFiles,
    RunningGateway,
    client,
    gateway_files,
    gateway_process,
    running_gateway,
)
from tests.mail import MailSink, Received, sink, wait_async, wait_for
from tests.web.test_signin import (
    PASSWORD,
    PREFIX,
    Form,
    audit_records,
    fetch,
    post_form,
    quick_hash,
    quick_users,
    sign_in,
    wait_for_generation,
)

ADMINS = ["alice@example.com", "carol@example.com"]


def users() -> dict[str, Any]:
    people = quick_users()
    people["carol"] = {"email": "carol@example.com", "password_hash": quick_hash(), "admin": True}
    people["dave"] = {"password_hash": quick_hash(), "admin": True}  # an admin without email
    return people


def notifying_files(tmp_path: Path, smtp_port: int, **security: Any) -> GatewayFiles:
    return gateway_files(
        tmp_path,
        users=users(),
        security={
            "two_factor": {"enforce": "none"},
            "notifications": {"enabled": True, "coalesce": "2s"},
            "legal_contacts": [{"name": "Dana Ops", "email": "dpo@example.com", "role": "DPO"}],
            **security,
        },
        extra_config={
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp_port,
                "from": "gateway@example.com",
                "timeout": "2s",
                "retry_max": "0.5s",
            },
            "public_url": "https://dash.example.com",
        },
    )


@contextlib.asynccontextmanager
async def gateway_and_mail(
    tmp_path: Path, **security: Any
) -> AsyncIterator[tuple[RunningGateway, MailSink]]:
    with sink() as server:
        files = notifying_files(tmp_path, server.port, **security)
        async with running_gateway(files) as gw:
            yield gw, server


async def settled(gw: RunningGateway) -> bool:
    from gateway.web.resources import SERVICES

    return (await gw.app[SERVICES].store.outbox_stats()).pending == 0


async def quiet(gw: RunningGateway, server: MailSink, count: int) -> list[Received]:
    """Wait until `count` mails arrived and the outbox is empty; then no more may come."""
    await wait_for(lambda: len(server.received) >= count, timeout=30)
    await wait_async(lambda: settled(gw), timeout=30)
    await asyncio.sleep(0.3)
    assert len(server.received) == count, [m.subject for m in server.received]
    return server.received


def items(mail: Received) -> list[str]:
    return [line for line in mail.part("plain").splitlines() if line.startswith("- ")]


class TestPolicyChanges:
    """One mail per reload, listing every change, to every admin with an email."""

    async def test_one_mail_per_reload_lists_every_change(self, tmp_path: Path) -> None:
        async with gateway_and_mail(tmp_path) as (gw, server):
            generation = gw.holder.current.generation
            gw.files.write_policy(
                "access",
                {
                    "protection": {"enabled": False},
                    "allowlists": {
                        "dashboard": {"enabled": True, "entries": [{"ip": "127.0.0.0/8"}]},
                        "api": {"enabled": False},
                    },
                },
            )
            await wait_for_generation(gw, generation, timeout=30)
            [network] = await quiet(gw, server, 1)

            generation = gw.holder.current.generation
            people = users()
            people["erin"] = {
                "email": "erin@example.com",
                "password_hash": quick_hash(),
                "grants": {"console": "viewer"},
            }
            people["bob"]["grants"] = {"console": "editor"}
            del people["carol"]["admin"]
            del people["dave"]
            roles = gw.files.policies["people"]["roles"]
            gw.files.write_policy("people", {"users": people, "roles": roles})
            await wait_for_generation(gw, generation, timeout=30)
            _, access = await quiet(gw, server, 2)
        assert network.subject == "[gateway] Policy changed: Global protection turned OFF (+2 more)"
        assert sorted(network.rcpt_tos) == ADMINS
        assert items(network) == [
            "- Global protection turned OFF",
            "- The dashboard allowlist turned ON",
            "- The dashboard allowlist now has 1 entries (was 0)",
        ]
        assert "https://dash.example.com/_gateway/admin/" in network.part("plain")
        assert "policies/access.yaml" in network.part("plain")
        assert items(access) == [
            "- User erin added (invited) as with console: viewer",
            "- User dave removed",
            "- User bob grants changed from console: viewer to console: editor",
            "- User carol is no longer a gateway admin",
            "- Service account sync removed",
        ]
        assert access.rcpt_tos == ("alice@example.com",)  # carol is no admin any more
        reloaded = [r for r in audit_records(gw.files) if r["event"] == "policy.reloaded"]
        assert reloaded[0]["changes"] == {
            "protection": {"enabled": [True, False]},
            "allowlists": {"dashboard": {"enabled": [False, True], "entries": [0, 1]}},
        }
        assert reloaded[1]["changes"]["users"] == {
            "added": ["erin"],
            "removed": ["dave"],
            "grants": {"bob": [{"console": "viewer"}, {"console": "editor"}]},
            "admin": {"carol": [True, False]},
        }

    async def test_notifications_turned_off_sends_one_last_mail(self, tmp_path: Path) -> None:
        async with gateway_and_mail(tmp_path) as (gw, server):
            generation = gw.holder.current.generation
            security = dict(gw.files.policies["security"])
            security["notifications"] = {"enabled": False}
            gw.files.write_policy("security", security)
            await wait_for_generation(gw, generation, timeout=30)
            [last] = await quiet(gw, server, 1)
            assert "Notifications turned OFF" in last.part("plain")
            assert sorted(last.rcpt_tos) == ADMINS
            async with client() as http:  # now nothing else is mailed
                reply = await sign_in(http, gw, "bob", "wrong password")
                assert reply.status == 401
            await asyncio.sleep(1.5)
            assert len(server.received) == 1


class TestSignIn:
    """A failed sign-in of a known user: admins at once, then one digest per window."""

    async def test_known_user_first_at_once_then_digest(self, tmp_path: Path) -> None:
        async with gateway_and_mail(tmp_path) as (gw, server), client() as http:
            assert (await sign_in(http, gw, "bob", "nope-1")).status == 401
            await wait_for(lambda: len(server.received) == 1)
            for i in range(3):
                assert (await sign_in(http, gw, "bob", f"nope-{i + 2}")).status == 401
            assert (await sign_in(http, gw, "nobody", "nope")).status == 401  # unknown: no mail
            first, digest = await quiet(gw, server, 2)
            metrics = (await fetch(http, "GET", f"{gw.url}{PREFIX}/metrics")).text
        assert first.subject == "[gateway] Failed sign-in for bob from 127.0.0.1 (country unknown)"
        assert sorted(first.rcpt_tos) == ADMINS
        assert "https://dash.example.com/_gateway/admin/users/bob" in first.part("plain")
        assert "nope" not in first.part("plain") + digest.part("plain")  # never the password
        assert digest.subject == "[gateway] 3 failed sign-ins for bob from 1 address"
        assert 'gateway_notifications_sent_total{kind="login.failure"} 2.0' in metrics
        assert "gateway_outbox_pending 0.0" in metrics

    async def test_password_changed_mails_the_user(self, tmp_path: Path) -> None:
        async with gateway_and_mail(tmp_path) as (gw, server), client() as http:
            assert (await sign_in(http, gw, "bob")).status == 302
            reply = await post_form(
                http,
                gw,
                "password",
                {
                    "current_password": PASSWORD,
                    "new_password": "an-entirely-new-Passphrase-77",
                    "new_password_confirm": "an-entirely-new-Passphrase-77",
                },
            )
            assert reply.status == 200, reply.text[:300]
            [mail] = await quiet(gw, server, 1)
        assert mail.rcpt_tos == ("bob@example.com",)
        assert mail.subject == "[gateway] Your gateway password was changed"
        assert "Passphrase" not in mail.part("plain") + mail.part("html")


def cleared(files: GatewayFiles) -> int:
    return sum(
        1
        for r in audit_records(files)
        if r["event"] == "system.message" and r["state"] == "cleared"
    )


class TestSystemMessages:
    """A rejected policy file: shown in readyz, mailed once, again only after it came back."""

    async def test_rejected_policy_mailed_once_per_appearance(self, tmp_path: Path) -> None:
        async with gateway_and_mail(tmp_path) as (gw, server):
            good = gw.files.policies["security"]
            for round_ in (1, 2):
                gw.files.write_policy("security", "two_factor: {enforce: maybe}\n")
                await wait_for(lambda: gw.holder.rejected is not None, timeout=30)
                await wait_for(lambda n=round_: len(server.received) == n, timeout=30)
                async with client() as http:
                    body = json.loads((await fetch(http, "GET", f"{gw.url}{PREFIX}/readyz")).text)
                [shown] = body["system_messages"]
                assert shown["key"] == "policy_rejected" and "security.yaml:1" in shown["text"]
                assert body["outbox"]["smtp_configured"] is True
                async with client() as http:
                    metrics = (await fetch(http, "GET", f"{gw.url}{PREFIX}/metrics")).text
                assert 'gateway_system_message{key="policy_rejected"} 1.0' in metrics
                await asyncio.sleep(0.5)  # more reloads of the same broken file: no more mail
                assert len(server.received) == round_
                gw.files.write_policy("security", good)
                await wait_for(lambda: gw.holder.rejected is None, timeout=30)
                await wait_for(lambda n=round_: cleared(gw.files) == n, timeout=30)
                async with client() as http:
                    metrics = (await fetch(http, "GET", f"{gw.url}{PREFIX}/metrics")).text
                assert 'gateway_system_message{key="policy_rejected"} 0.0' in metrics
            mails = await quiet(gw, server, 2)
        for mail in mails:
            assert mail.subject.startswith("[gateway] System message: a policy file was rejected")
            assert sorted(mail.rcpt_tos) == ADMINS
        events = [r for r in audit_records(gw.files) if r["event"] == "system.message"]
        assert [r["state"] for r in events][:3] == ["raised", "cleared", "raised"]


@pytest.mark.parametrize("ready_path", ["readyz"])
async def test_readyz_hides_the_outbox_from_others(tmp_path: Path, ready_path: str) -> None:
    """Only ops_allow clients see system messages and the outbox."""
    with sink() as server:
        files = notifying_files(tmp_path, server.port)
        files.config["ops_allow"] = ["10.0.0.0/8"]
        files.write()
        async with running_gateway(files) as gw, client() as http:
            body = json.loads((await fetch(http, "GET", f"{gw.url}{PREFIX}/{ready_path}")).text)
    assert "system_messages" not in body and "outbox" not in body


class SlowHandler(SinkHandler):
    """While `hold` is set, DATA is kept waiting and then refused (a send cut off midway)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.held: list[str] = []  # Message-IDs of the sends that were held

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.hold.is_set():
            text = envelope.content.decode(errors="replace")  # type: ignore[union-attr]
            self.held.append(
                next(
                    line.split(":", 1)[1].strip()
                    for line in text.splitlines()
                    if line.lower().startswith("message-id:")
                )
            )
            for _ in range(300):
                if not self.hold.is_set():
                    break
                await asyncio.sleep(0.1)
            return "451 4.3.0 held"
        return await super().handle_DATA(server, session, envelope)


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh schema on the test PostgreSQL; yields a state: URL using it."""
    import secrets

    import asyncpg

    from tests.services.conftest import POSTGRES_URL

    admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    schema = f"t_{secrets.token_hex(6)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?search_path={schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


class TestSeveralProcesses:
    """Gateway processes sharing a state store send each notification once."""

    async def test_two_instances_on_postgresql(self, tmp_path: Path) -> None:
        async with postgres_schema() as state:
            with sink() as server:
                files = notifying_files(tmp_path, server.port)
                files.config["state"] = state
                files.write()
                async with (
                    gateway_process(files) as (url_a, _a),
                    gateway_process(files) as (url_b, _b),
                ):
                    files.write_policy(
                        "access",
                        {
                            "protection": {"enabled": False},
                            "allowlists": {
                                "dashboard": {"enabled": False},
                                "api": {"enabled": False},
                            },
                        },
                    )
                    await wait_for(lambda: len(server.received) >= 1, timeout=30)
                    for url in (url_a, url_b, url_a):
                        async with client() as http:
                            await fetch_login(http, url, "bob", "wrong-password")
                    await wait_for(lambda: len(server.received) >= 3, timeout=30)
                    await asyncio.sleep(2.5)  # two processes, a second policy mail would show
                mails = server.received
        subjects = sorted(m.subject for m in mails)
        assert subjects == [
            "[gateway] 2 failed sign-ins for bob from 1 address",
            "[gateway] Failed sign-in for bob from 127.0.0.1 (country unknown)",
            "[gateway] Policy changed: Global protection turned OFF",
        ], subjects
        assert len({m.message_id for m in mails}) == 3

    async def test_kill_9_of_the_process_holding_a_lease(self, tmp_path: Path) -> None:
        handler = SlowHandler()
        handler.hold.set()
        with sink(handler=handler) as server:
            files = notifying_files(tmp_path, server.port)
            async with gateway_process(files) as (url, proc):
                async with client() as http:
                    await fetch_login(http, url, "bob", "wrong-password")
                await wait_for(lambda: len(handler.held) == 1, timeout=30)
                proc.kill()  # SIGKILL while its send waits for the server's answer
                await proc.wait()
            handler.hold.clear()
            async with gateway_process(files):  # the lease runs out; this one sends it
                await wait_for(lambda: len(server.received) == 1, timeout=30)
                await asyncio.sleep(1.0)
            [mail] = server.received
        assert mail.message_id == handler.held[0]  # the same notification, recognisably
        assert mail.subject == "[gateway] Failed sign-in for bob from 127.0.0.1 (country unknown)"
        sent = [r for r in audit_records(files) if r["event"] == "notification.sent"]
        assert [r["message_id"] for r in sent] == [mail.message_id]


async def fetch_login(http: aiohttp.ClientSession, url: str, user: str, password: str) -> None:
    """The login form of a gateway process, posted with its CSRF token."""
    page = await fetch(http, "GET", f"{url}{PREFIX}/login")
    token = Form(page.text).csrf
    reply = await fetch(
        http,
        "POST",
        f"{url}{PREFIX}/login",
        data={"username": user, "password": password, "csrf_token": token},
    )
    assert reply.status == 401, reply.status


class TestConsole:
    """The admin console: a 2FA reset mails the user; home shows messages, outbox, contacts."""

    async def test_reset_2fa_by_an_admin_and_the_home_page(self, tmp_path: Path) -> None:
        async with gateway_and_mail(tmp_path) as (gw, server), client() as http:
            assert (await sign_in(http, gw, "alice")).status == 302
            reply = await post_form(http, gw, "admin/users/bob", {"action": "reset_2fa"})
            assert reply.status == 303, reply.text[:300]
            [mail] = await quiet(gw, server, 1)
            gw.files.write_policy("security", "two_factor: {enforce: maybe}\n")
            await wait_for(lambda: gw.holder.rejected is not None, timeout=30)
            await quiet(gw, server, 2)
            home = await fetch(http, "GET", f"{gw.url}{PREFIX}/admin/")
        assert mail.rcpt_tos == ("bob@example.com",)
        assert mail.subject == "[gateway] Your two-factor authentication was reset by an admin"
        assert "admin alice" in mail.part("plain")
        assert home.status == 200
        assert "a policy file was rejected" in home.text  # the system message
        assert "Dana Ops" in home.text and "dpo@example.com" in home.text
        assert "Pending" in home.text and "not configured yet" not in home.text


class TestUserReminders:
    """Password expiry: one mail 7 days before, one 1 day before, however often it is checked."""

    async def test_password_expiring_reminders_at_7_and_1_days(self, tmp_path: Path) -> None:
        import time

        from gateway.services.notify.runtime import remind
        from gateway.web.resources import SERVICES

        policy = {"password_policy": {"max_age_days": 10}}
        async with gateway_and_mail(tmp_path, **policy) as (gw, server):
            services = gw.app[SERVICES]
            bob = gw.holder.current.users["bob"]
            now = time.time()
            await services.store.password_first_seen("bob", bob.password_hash, now - 5 * 86400)
            await remind(services)
            await remind(services)
            [week] = await quiet(gw, server, 1)
            # the same password two days later: one day left
            await services.store.password_set(
                "bob", bob.password_hash, bob.password_hash, now - 9.5 * 86400
            )
            await remind(services)
            await remind(services)
            _, day = await quiet(gw, server, 2)
        assert week.rcpt_tos == ("bob@example.com",)
        assert week.subject == "[gateway] Your gateway password expires in 5 days"
        assert day.subject == "[gateway] Your gateway password expires in 1 day"
        assert "https://dash.example.com/_gateway/password" in day.part("plain")


class TestSecurityOperations:
    """Incidents (admins and legal contacts), a new country (the user), the country of a failed
    sign-in and the lockout guard: sign-ins through a trusted proxy, a real GeoIP file."""

    COUNTRIES = {"81.2.69.0/24": "GB", "1.0.16.0/20": "JP", "89.160.20.0/24": "SE"}
    GB, JP, SE = "81.2.69.142", "1.0.16.9", "89.160.20.112"

    @contextlib.asynccontextmanager
    async def gateway(
        self, tmp_path: Path, **security: Any
    ) -> AsyncIterator[tuple[RunningGateway, MailSink]]:
        from tests.factories import write_country_mmdb

        write_country_mmdb(tmp_path / "country.mmdb", self.COUNTRIES)
        with sink() as server:
            files = notifying_files(tmp_path, server.port, **security)
            files.config.update(
                trusted_proxies=["127.0.0.1/32"], geoip={"database": "country.mmdb"}
            )
            files.write()
            async with running_gateway(files) as gw:
                yield gw, server

    async def sign_in_from(
        self, gw: RunningGateway, user: str, ip: str, password: str = PASSWORD
    ) -> int:
        async with client(headers={"X-Forwarded-For": ip}) as http:
            return (await sign_in(http, gw, user, password)).status

    async def test_incident_mails_admins_and_legal_contacts(self, tmp_path: Path) -> None:
        async with self.gateway(tmp_path) as (gw, server):
            assert await self.sign_in_from(gw, "bob", self.GB) == 302
            assert await self.sign_in_from(gw, "bob", self.JP) == 302
            mails = await quiet(gw, server, 2)  # and bob hears of the sign-in from JP
        [incident] = [m for m in mails if "Security incident" in m.subject]
        [to_bob] = [m for m in mails if m is not incident]
        assert to_bob.subject == "[gateway] New sign-in to your account from JP"
        assert incident.subject == "[gateway] Security incident: bob signed in from 2 countries"
        assert sorted(incident.rcpt_tos) == [*ADMINS, "dpo@example.com"]
        text = incident.part("plain")
        assert f"from {self.GB} (GB)" in text and f"from {self.JP} (JP)" in text
        assert "https://dash.example.com/_gateway/admin/incidents" in text

    async def test_new_country_mails_the_user(self, tmp_path: Path) -> None:
        incidents = {"incidents": {"window": "1s", "distinct_countries": 2}}
        async with self.gateway(tmp_path, **incidents) as (gw, server):
            assert await self.sign_in_from(gw, "bob", self.GB) == 302  # first ever: no mail
            assert await self.sign_in_from(gw, "bob", self.GB) == 302  # seen: no mail
            await asyncio.sleep(1.1)  # outside the incident window
            assert await self.sign_in_from(gw, "bob", self.SE) == 302  # new: bob hears of it
            mails = await quiet(gw, server, 1)
        [mail] = mails
        assert mail.rcpt_tos == ("bob@example.com",)
        assert mail.subject == "[gateway] New sign-in to your account from SE"
        assert f"{self.SE} (SE)" in mail.part("plain")

    async def test_failed_sign_in_names_the_country(self, tmp_path: Path) -> None:
        async with self.gateway(tmp_path) as (gw, server):
            assert await self.sign_in_from(gw, "bob", self.GB, "wrong") == 401
            [mail] = await quiet(gw, server, 1)
        assert mail.subject == f"[gateway] Failed sign-in for bob from {self.GB} (GB)"

    async def test_lockout_guard(self, tmp_path: Path) -> None:
        async with self.gateway(tmp_path) as (gw, server):
            assert await self.sign_in_from(gw, "alice", self.GB) == 302
            generation = gw.holder.current.generation
            gw.files.write_policy(
                "access",
                {
                    "protection": {"enabled": True},
                    "allowlists": {
                        "dashboard": {"enabled": True, "entries": [{"ip": "127.0.0.1"}]},
                        "api": {"enabled": False},
                    },
                },
            )
            await wait_for_generation(gw, generation, timeout=30)
            mails = await quiet(gw, server, 2)
        [guard] = [m for m in mails if m.subject.startswith("[gateway] System message")]
        assert "locks out every gateway admin" in guard.subject
        assert sorted(guard.rcpt_tos) == ADMINS


class TestRestartWithMailPending:
    """`gateway run` stopped while SMTP is down and notices wait; started again with SMTP
    back: every notice arrives, none twice."""

    async def test_restart_then_smtp_back(self, tmp_path: Path) -> None:
        from gateway.services.store import open_store
        from tests.factories import free_port

        port = free_port()  # nothing listens here yet: SMTP is down
        files = notifying_files(tmp_path, port)
        async with gateway_process(files) as (url, _proc):
            for user in ("bob", "carol", "bob", "carol", "bob"):
                async with client() as http:
                    await fetch_login(http, url, user, "wrong-password")
            store = await open_store(files.config["state"], files.root)
            try:
                await wait_async(lambda: _retried(store), timeout=30)
                assert (await store.outbox_stats()).pending == 5
            finally:
                await store.close()
        with MailSink(port) as server:
            async with gateway_process(files):
                await wait_for(lambda: _notices(server.received) == 5, timeout=30)
                await asyncio.sleep(1.0)
            mails = server.received
        assert _notices(mails) == 5
        assert len({m.message_id for m in mails}) == len(mails) <= 4
        for user, count in (("bob", 3), ("carol", 2)):
            about = [m for m in mails if f" {user} " in m.subject]
            assert sum(len(items(m)) or 1 for m in about) == count, [m.subject for m in about]


async def _retried(store: Any) -> bool:
    rows = await store.outbox_list("pending", 10)
    return bool(rows) and all(r.attempts >= 1 or r.not_before > r.created_at for r in rows)


def _notices(mails: list[Received]) -> int:
    """Notices carried: a digest lists one per line, a single mail is one."""
    return sum(len(items(m)) or 1 for m in mails)
