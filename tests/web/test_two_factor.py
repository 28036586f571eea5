"""Two-factor sign-in over real HTTP: the enrollment interstitial, the code prompt, replay,
recovery codes and code brute force (docs/http.md), with codes computed by
Debian's `oathtool`, and one replay test across two real `gateway run` processes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.factories import (
    PASSWORD,
    GatewayFiles,
    RunningGateway,
    client,
    free_port,
    gateway_files,
    running_gateway,
    serve,
)
from tests.web.test_signin import (
    GATEWAY_BIN,
    LOGIN,
    PREFIX,
    SESSION_COOKIE,
    Form,
    Reply,
    counting_echo,
    csrf_token,
    fetch,
    jar_cookie,
    post_form,
    quick_users,
    sign_in,
    wait_for_audit,
)

ENROLL = f"{PREFIX}/2fa/enroll"
VERIFY = f"{PREFIX}/2fa/verify"
CONTINUE = f"{PREFIX}/2fa/continue"
ISSUER = "Acme Dashboard"


def security(enforce: str, max_failures: int = 5) -> dict:
    return {
        "two_factor": {"enforce": enforce, "issuer": ISSUER},
        "login_regulation": {"max_failures": max_failures, "window": "10m", "ban": "15m"},
    }


async def totp_code(secret: str, steps_ahead: int = 0) -> str:
    """The code `oathtool` computes for now (+ 30 s per step ahead)."""
    at = int(time.time()) + 30 * steps_ahead
    done = await asyncio.to_thread(
        subprocess.run,
        ["oathtool", "--totp", "-b", secret, "-N", f"@{at}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    code = done.stdout.strip()
    assert re.fullmatch(r"[0-9]{6}", code), done
    return code


def wrong_code(*right: str) -> str:
    for candidate in ("000000", "111111", "222222"):
        if candidate not in right:
            return candidate
    raise AssertionError("unreachable")


async def enroll(http, gw: RunningGateway, user: str = "alice", next_: str = "/"):  # type: ignore[no-untyped-def]
    """Sign in and enroll with oathtool; returns (secret, recovery codes, reply to continue)."""
    reply = await sign_in(http, gw, user, next_=next_)
    assert (reply.status, reply.location) == (302, ENROLL), (reply.status, reply.text[:300])
    page = Form((await fetch(http, "GET", f"{gw.url}{ENROLL}")).text)
    assert page.totp_secret
    code = await totp_code(page.totp_secret)
    done = await fetch(
        http, "POST", f"{gw.url}{ENROLL}", data={"code": code, "csrf_token": page.csrf}
    )
    assert done.status == 200, done.text[:300]
    codes = Form(done.text).recovery_codes
    assert len(codes) == 10
    return page.totp_secret, codes, await fetch(http, "GET", f"{gw.url}{CONTINUE}")


async def submit_code(http, gw: RunningGateway, code: str) -> Reply:  # type: ignore[no-untyped-def]
    return await post_form(http, gw, "2fa/verify", {"code": code})


async def assert_nothing_reachable(http, gw: RunningGateway, hits: list[str], next_: str) -> None:  # type: ignore[no-untyped-def]
    """Between the password and the end of sign-in, no app and no other gateway page answers."""
    before = list(hits)
    token = await csrf_token(http, gw)
    attempts = [
        ("GET", "/", None),
        ("GET", "/anything?x=1", None),
        ("POST", "/x", {"a": "1"}),
        ("GET", next_, None),
        ("GET", f"{PREFIX}/account", None),
        ("GET", f"{PREFIX}/password", None),
        (
            "POST",
            f"{PREFIX}/password",
            {
                "current_password": PASSWORD,
                "new_password": "an0ther-Long-passphrase!",
                "new_password_confirm": "an0ther-Long-passphrase!",
                "csrf_token": token,
            },
        ),
        (
            "POST",
            f"{PREFIX}/account",
            {"action": "regenerate_codes", "code": "000000", "csrf_token": token},
        ),
        ("GET", f"{PREFIX}/admin/", None),
    ]
    for method, path, data in attempts:
        reply = await fetch(http, method, f"{gw.url}{path}", data=data)
        where = f"{method} {path} -> {reply.status} {reply.location}"
        assert not reply.is_echo, where
        assert reply.status in (302, 401, 403, 404), where
        if reply.status == 302:
            assert reply.location.startswith(f"{PREFIX}/"), where
    assert hits == before


@pytest.fixture
async def backend():
    app, hits = counting_echo()
    async with serve(app) as url:
        yield url, hits


@contextlib.asynccontextmanager
async def two_factor_gateway(
    tmp_path, backend_url: str, enforce: str = "all", max_failures: int = 5
) -> AsyncIterator[RunningGateway]:
    files = gateway_files(
        tmp_path,
        dashboard_upstream=backend_url,
        users=quick_users(),
        security=security(enforce, max_failures),
    )
    async with running_gateway(files, watch_files=False) as gw:
        yield gw


class TestEnrollmentInterstitial:
    """With 2FA required and no authenticator, the password leads to enrollment and nowhere else."""

    async def test_page_shows_qr_secret_and_uri(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0]) as gw, client() as http:
            reply = await sign_in(http, gw, next_="/reports")
            assert (reply.status, reply.location) == (302, ENROLL)
            page = await fetch(http, "GET", f"{gw.url}{ENROLL}")
            assert page.status == 200
            assert page.headers["Cache-Control"] == "no-store"
            form = Form(page.text)
            secret = form.totp_secret
            assert secret and re.fullmatch(r"[A-Z2-7]{32}", secret)
            assert form.svg >= 1 and "<svg" in page.text and "<img" not in page.text
            visible = re.sub(r"<[^>]+>", " ", page.text)
            grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
            assert grouped in visible
            uris = [u for u in form.links if u.startswith("otpauth://totp/")]
            assert len(uris) == 1
            query = parse_qs(urlsplit(uris[0]).query)
            assert query["secret"] == [secret]
            assert query["issuer"] == [ISSUER]
            assert "alice%40example.com" in uris[0] or "alice@example.com" in uris[0]
            assert form.inputs["code"]["autocomplete"] == "one-time-code"
            assert form.inputs["code"]["id"] in form.label_for
            assert form.forms[0]["action"] == ENROLL
            # the same secret until it is confirmed (a reload must not break a half-done scan)
            again = Form((await fetch(http, "GET", f"{gw.url}{ENROLL}")).text)
            assert again.totp_secret == secret

    async def test_nothing_reachable_before_enrolling(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0]) as gw, client() as http:
            await sign_in(http, gw, next_="/reports")
            await assert_nothing_reachable(http, gw, backend[1], "/reports")
            for page in (VERIFY, CONTINUE):
                reply = await fetch(http, "GET", f"{gw.url}{page}")
                assert reply.status == 302 and not reply.is_echo
            # a wrong code does not enroll, and still nothing is reachable
            form = Form((await fetch(http, "GET", f"{gw.url}{ENROLL}")).text)
            code = await totp_code(form.totp_secret)
            bad = await fetch(
                http,
                "POST",
                f"{gw.url}{ENROLL}",
                data={"code": wrong_code(code), "csrf_token": form.csrf},
            )
            assert bad.status == 401
            assert Form(bad.text).recovery_codes == []
            await assert_nothing_reachable(http, gw, backend[1], "/reports")
        assert backend[1] == []

    async def test_enroll_then_recovery_codes_once_then_target(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0]) as gw, client() as http:
            reply = await sign_in(http, gw, next_="/reports?q=1")
            form = Form((await fetch(http, "GET", f"{gw.url}{ENROLL}")).text)
            code = await totp_code(form.totp_secret)
            done = await fetch(
                http, "POST", f"{gw.url}{ENROLL}", data={"code": code, "csrf_token": form.csrf}
            )
            assert done.status == 200
            assert done.headers["Cache-Control"] == "no-store"
            shown = Form(done.text)
            codes = shown.recovery_codes
            assert len(codes) == len(set(codes)) == 10
            assert all(re.fullmatch(r"[a-z2-9]{5}-[a-z2-9]{5}", c) for c in codes)
            assert CONTINUE in shown.links
            # recovery codes on screen, sign-in not finished: still nothing behind the gateway
            await assert_nothing_reachable(http, gw, backend[1], "/reports?q=1")
            reply = await fetch(http, "GET", f"{gw.url}{CONTINUE}")
            assert (reply.status, reply.location) == (302, "/reports?q=1")
            reply = await fetch(http, "GET", f"{gw.url}/reports?q=1")
            seen = reply.backend_headers()
            assert seen["x-gateway-auth"] == "password+totp"
            assert seen["x-gateway-user"] == "alice"
            # the codes are never shown again
            again = await fetch(http, "GET", f"{gw.url}{ENROLL}")
            assert (again.status, again.location) == (302, f"{PREFIX}/account")
            account = await fetch(http, "GET", f"{gw.url}{PREFIX}/account")
            assert "10 recovery codes left" in account.text
            assert Form(account.text).recovery_codes == []
            assert not any(c in account.text for c in codes)
        assert backend[1] == ["GET /reports?q=1"]
        enrolled = await wait_for_audit(gw.files, "totp.enrolled", principal="alice")
        assert enrolled and code not in gw.files.audit_file.read_text()
        assert not any(c in gw.files.audit_file.read_text() for c in codes)

    async def test_stale_interstitial_cannot_replace_an_authenticator(self, tmp_path, backend):
        """A second password-only session must not enroll over the authenticator set meanwhile."""
        async with two_factor_gateway(tmp_path, backend[0]) as gw:
            async with client() as owner, client() as intruder:
                await sign_in(intruder, gw)  # the password alone: stage "enroll"
                stale = Form((await fetch(intruder, "GET", f"{gw.url}{ENROLL}")).text)
                secret, _, reply = await enroll(owner, gw)
                assert reply.location == "/"
                # the intruder's form, and a fresh one, must not take over the account
                code = await totp_code(stale.totp_secret)
                reply = await fetch(
                    intruder,
                    "POST",
                    f"{gw.url}{ENROLL}",
                    data={"code": code, "csrf_token": stale.csrf},
                )
                assert Form(reply.text).recovery_codes == [], "enrolled over the owner's app"
                page = await fetch(intruder, "GET", f"{gw.url}{ENROLL}")
                assert page.status == 302 and page.location in (VERIFY, LOGIN), page.location
                assert not (await fetch(intruder, "GET", f"{gw.url}/")).is_echo
            async with client() as later:  # the owner's authenticator still signs in
                assert (await sign_in(later, gw)).location == VERIFY
                reply = await submit_code(later, gw, await totp_code(secret, 1))
                assert reply.status == 302, Form(reply.text).error


class TestEnforceAdmins:
    """With enforce: admins only gateway admins must enroll; others get in with a password."""

    async def test_admin_enrolls_user_does_not(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0], "admins") as gw:
            async with client() as http:
                reply = await sign_in(http, gw, "bob", next_="/b")
                assert (reply.status, reply.location) == (302, "/b")
                seen = (await fetch(http, "GET", f"{gw.url}/b")).backend_headers()
                assert (seen["x-gateway-user"], seen["x-gateway-auth"]) == ("bob", "password")
            async with client() as http:
                reply = await sign_in(http, gw, "alice", next_="/a")
                assert reply.location == ENROLL
                await assert_nothing_reachable(http, gw, backend[1], "/a")


class TestCodePrompt:
    """An enrolled user is asked for a code after the password; each code works once."""

    async def test_prompt_wrong_code_replay_and_recovery_codes(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0]) as gw:
            async with client() as http:
                secret, recovery, _ = await enroll(http, gw)
            hits = backend[1]
            async with client() as http:
                reply = await sign_in(http, gw, next_="/deep/page")
                assert (reply.status, reply.location) == (302, VERIFY)
                page = await fetch(http, "GET", f"{gw.url}{VERIFY}")
                form = Form(page.text)
                assert form.inputs["code"]["autocomplete"] == "one-time-code"
                assert form.inputs["code"]["inputmode"] == "numeric"
                assert form.inputs["code"]["id"] in form.label_for
                assert form.forms[0]["action"] == VERIFY
                await assert_nothing_reachable(http, gw, hits, "/deep/page")
                # the enrollment page cannot be used to swap the authenticator
                reply = await fetch(http, "GET", f"{gw.url}{ENROLL}")
                assert reply.status == 302 and reply.location != ENROLL
                code = await totp_code(secret, 1)
                reply = await submit_code(http, gw, wrong_code(code))
                assert reply.status == 401
                assert "not valid" in Form(reply.text).error
                reply = await submit_code(http, gw, code)
                assert (reply.status, reply.location) == (302, "/deep/page")
                seen = (await fetch(http, "GET", f"{gw.url}/deep/page")).backend_headers()
                assert seen["x-gateway-auth"] == "password+totp"
            async with client() as http:  # the same code again, from another sign-in
                assert (await sign_in(http, gw)).location == VERIFY
                reply = await submit_code(http, gw, code)
                assert reply.status == 401
                assert "already used" in Form(reply.text).error
                assert not (await fetch(http, "GET", f"{gw.url}/")).is_echo
                # a recovery code works instead (any case, spaces instead of the dash)
                reply = await submit_code(http, gw, recovery[0].upper().replace("-", " "))
                # signed in, and told how many codes remain before going on
                assert reply.status == 200
                assert "You have <strong>9</strong> recovery codes left" in reply.text
                assert 'href="/">Continue</a>' in reply.text
                seen = (await fetch(http, "GET", f"{gw.url}/")).backend_headers()
                assert seen["x-gateway-auth"] == "password+totp"
                account = await fetch(http, "GET", f"{gw.url}{PREFIX}/account")
                assert "9 recovery codes left" in account.text
            async with client() as http:  # ... but only once
                assert (await sign_in(http, gw)).location == VERIFY
                reply = await submit_code(http, gw, recovery[0])
                assert reply.status == 401
                reply = await submit_code(http, gw, recovery[1])
                assert reply.status == 200
                assert "<strong>8</strong> recovery codes left" in reply.text
        failures = await wait_for_audit(gw.files, "totp.failure", 3, principal="alice")
        assert len(failures) == 3
        assert any(f.get("replayed") for f in failures)
        assert await wait_for_audit(gw.files, "totp.recovery_code_used", 2)


class TestCodeBruteForce:
    """Wrong codes count like wrong passwords: max_failures of them ban the user."""

    async def test_ban_from_one_address(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0], max_failures=3) as gw:
            async with client("127.0.0.2") as http:
                secret, _, _ = await enroll(http, gw)
            async with client("127.0.0.3") as http:
                assert (await sign_in(http, gw)).location == VERIFY
                right = await totp_code(secret, 1)
                for _ in range(2):
                    assert (await submit_code(http, gw, wrong_code(right))).status == 401
                reply = await submit_code(http, gw, wrong_code(right))
                assert reply.status == 429
                # the half-done sign-in is over: even the right code does not help now
                reply = await submit_code(http, gw, right)
                assert reply.status == 302 and reply.location.startswith(LOGIN)
                assert not (await fetch(http, "GET", f"{gw.url}/")).is_echo
            async with client("127.0.0.4") as http:  # banned user, from anywhere
                assert (await sign_in(http, gw)).status == 429
        assert await wait_for_audit(gw.files, "login.banned", principal="alice")

    async def test_signing_in_again_does_not_reset_the_count(self, tmp_path, backend):
        """An attacker who knows the password cannot clear the code failures by signing in anew."""
        async with two_factor_gateway(tmp_path, backend[0], max_failures=3) as gw:
            async with client("127.0.0.2") as http:
                secret, _, _ = await enroll(http, gw)
            right = await totp_code(secret, 1)
            statuses = []
            for address in ("127.0.0.5", "127.0.0.6"):  # new addresses: no IP ban helps
                async with client(address) as http:
                    reply = await sign_in(http, gw)
                    if reply.status == 429:
                        statuses.append(429)
                        break
                    assert reply.location == VERIFY
                    for _ in range(2):
                        statuses.append((await submit_code(http, gw, wrong_code(right))).status)
            assert 429 in statuses, statuses
            async with client("127.0.0.7") as http:
                assert (await sign_in(http, gw)).status == 429


class TestAccountPageCodes:
    """Codes typed on the account page (new recovery codes, new phone) count toward the ban too."""

    async def test_guessing_codes_on_account_page_is_regulated(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0], max_failures=3) as gw:
            async with client("127.0.0.2") as http:
                secret, _, _ = await enroll(http, gw)
                right = await totp_code(secret, 1)
                statuses = []
                for _ in range(4):
                    reply = await post_form(
                        http,
                        gw,
                        "account",
                        {"action": "regenerate_codes", "code": wrong_code(right)},
                    )
                    statuses.append(reply.status)
                    assert Form(reply.text).recovery_codes == []
                # banned now: even the right code is not taken on this page
                reply = await post_form(
                    http, gw, "account", {"action": "reenroll_2fa", "code": right}
                )
                assert reply.status != 302 or reply.location != ENROLL, statuses
                assert "Too many failed attempts" in Form(reply.text).error
            async with client("127.0.0.3") as http:  # and signing in is refused as well
                assert (await sign_in(http, gw)).status == 429
            assert len(await wait_for_audit(gw.files, "totp.failure", 3, principal="alice")) >= 3


class TestSessionFixationAtCodePrompt:
    """Completing the code prompt issues a new session id; the half-signed-in one stays useless."""

    async def test_planted_half_done_session(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0]) as gw:
            async with client() as http:
                secret, _, _ = await enroll(http, gw)
            async with client() as attacker, client() as victim:
                # someone with the password stops at the code prompt and plants that session id
                assert (await sign_in(attacker, gw)).location == VERIFY
                planted = jar_cookie(attacker, SESSION_COOKIE)
                victim.cookie_jar.update_cookies({SESSION_COOKIE: planted})
                assert (await fetch(victim, "GET", f"{gw.url}{VERIFY}")).status == 200
                reply = await submit_code(victim, gw, await totp_code(secret, 1))
                assert (reply.status, reply.location) == (302, "/")
                assert reply.cookie_value(SESSION_COOKIE) not in (None, planted)
                assert (await fetch(victim, "GET", f"{gw.url}/")).is_echo
                reply = await fetch(attacker, "GET", f"{gw.url}/")
                assert not reply.is_echo, "the planted session id was signed in"


# -- two real processes sharing one state store ------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_process(files: GatewayFiles, log_name: str) -> AsyncIterator[str]:
    """`gateway run --port P` as a real process; yields its base URL once it is ready."""
    port = free_port()
    log = (files.root / f"{log_name}.log").open("w")
    proc = subprocess.Popen(
        [str(GATEWAY_BIN), "run", "--config", str(files.config_file), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        async with client() as http:
            while True:
                assert proc.poll() is None, (files.root / f"{log_name}.log").read_text()
                with contextlib.suppress(OSError):
                    async with http.get(f"{url}{PREFIX}/readyz") as r:
                        if r.status == 200:
                            break
                assert time.monotonic() < deadline, "gateway process did not become ready"
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        log.close()


class TestReplayAcrossProcesses:
    """Two gateway processes on one state store accept a given code exactly once between them."""

    async def test_same_code_to_both_processes(self, tmp_path, backend):
        files = gateway_files(
            tmp_path, dashboard_upstream=backend[0], users=quick_users(), security=security("all")
        )
        async with gateway_process(files, "a") as url_a, gateway_process(files, "b") as url_b:
            gw_a = RunningGateway(url_a, "127.0.0.1", 0, None, None, files)  # type: ignore[arg-type]
            gw_b = RunningGateway(url_b, "127.0.0.1", 0, None, None, files)  # type: ignore[arg-type]
            async with client() as http:
                secret, _, reply = await enroll(http, gw_a)
                assert reply.location == "/"
            async with client() as on_a, client() as on_b:
                assert (await sign_in(on_a, gw_a)).location == VERIFY
                assert (await sign_in(on_b, gw_b)).location == VERIFY
                tokens = [await csrf_token(on_a, gw_a), await csrf_token(on_b, gw_b)]
                code = await totp_code(secret, 1)
                replies = await asyncio.gather(
                    fetch(
                        on_a,
                        "POST",
                        f"{url_a}{VERIFY}",
                        data={"code": code, "csrf_token": tokens[0]},
                    ),
                    fetch(
                        on_b,
                        "POST",
                        f"{url_b}{VERIFY}",
                        data={"code": code, "csrf_token": tokens[1]},
                    ),
                )
                statuses = sorted(r.status for r in replies)
                assert statuses == [302, 401], [(r.status, r.text[:200]) for r in replies]
                refused = next(r for r in replies if r.status == 401)
                assert "already used" in Form(refused.text).error
                winner = on_a if replies[0].status == 302 else on_b
                loser = on_b if winner is on_a else on_a
                assert (await fetch(winner, "GET", f"{url_a}/")).is_echo
                assert not (await fetch(loser, "GET", f"{url_b}/")).is_echo


class TestMoveToANewPhone:
    """ "Move to a new phone" keeps the old authenticator until the new one is confirmed."""

    async def test_old_phone_works_until_the_new_one_is_confirmed(self, tmp_path, backend):
        async with two_factor_gateway(tmp_path, backend[0]) as gw:
            async with client("127.0.0.2") as http:
                old, recovery, _ = await enroll(http, gw)
                reply = await post_form(
                    http, gw, "account", {"action": "reenroll_2fa", "code": await totp_code(old, 1)}
                )
                assert (reply.status, reply.location) == (302, ENROLL)
                page = Form((await fetch(http, "GET", f"{gw.url}{ENROLL}")).text)
                assert "<h1>Move to a new phone</h1>" in page.text
                assert "Your current phone keeps working until you confirm" in page.text
                assert f"{PREFIX}/account" in page.links  # a way back that keeps the old phone
                new = page.totp_secret
                assert new and new != old

                # Meanwhile whoever has the password still meets the old factor, never a
                # fresh enrollment of their own.
                async with client("127.0.0.3") as other:
                    reply = await sign_in(other, gw)
                    assert (reply.status, reply.location) == (302, VERIFY)
                    assert (await submit_code(other, gw, recovery[0])).status in (200, 302)

                done = await fetch(
                    http,
                    "POST",
                    f"{gw.url}{ENROLL}",
                    data={"code": await totp_code(new), "csrf_token": page.csrf},
                )
                assert (done.status, done.location) == (302, f"{PREFIX}/account")
                account = await fetch(http, "GET", f"{gw.url}{PREFIX}/account")
                assert "Codes from the old phone no longer work" in account.text

            async with client("127.0.0.4") as http:
                assert (await sign_in(http, gw)).location == VERIFY
                assert (await submit_code(http, gw, await totp_code(old, 1))).status == 401
                assert (await submit_code(http, gw, await totp_code(new, 1))).status == 302
            moved = await wait_for_audit(gw.files, "totp.enrolled", 2, principal="alice")
            assert moved[-1].get("moved") is True
