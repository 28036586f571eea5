"""Sign-in views: login, the 2FA prompt and enrollment interstitial, password change, account,
logout (docs/http.md).

A sign-in is a small state machine kept in the server-side session:

    login --password ok--> [password: must change] --> [enroll: 2FA required, none yet]
          --> [totp: enrolled] --> done

`advance()` picks the next stage; each view accepts only its own stage, so nothing behind the
gateway, and no other gateway page, is reachable before `done`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable, Callable
from html import escape
from typing import TypeVar

from aiohttp import web
from aiohttp_session import Session, get_session

from gateway.context import RequestContext, context_of
from gateway.policy.schema import LoginRegulation
from gateway.policy.snapshot import User
from gateway.services import accounts, regulation, totp
from gateway.services.notify.secops_hooks import country_of
from gateway.services.passwords import PasswordRules
from gateway.web import forms
from gateway.web.html import page
from gateway.web.redirects import safe_next
from gateway.web.resources import SERVICES, Services
from gateway.web.sessions import (
    current_login,
    fresh_session,
    login_state,
    password_version,
    session_hash,
)

T = TypeVar("T")

SEALER_PURPOSE = "totp-secrets"
PENDING_SECRET = "pending_totp"  # noqa: S105 - a session key name, not a secret
MOVING_PHONE = "moving_phone"  # when a current code opened "Move to a new phone"
MOVE_WINDOW = 600.0  # seconds a checked code keeps the move open


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _url(ctx: RequestContext, name: str) -> str:
    return f"{ctx.snapshot.prefix}/{name}"


def _brand(ctx: RequestContext) -> str:
    """The product's name on the sign-in pages: the name the authenticator app shows too."""
    return ctx.snapshot.policy.two_factor.issuer


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html")


def audit(request: web.Request, event: str, *, principal: str | None, **fields: object) -> None:
    ctx = context_of(request)
    _services(request).audit.record(
        event,
        flush=True,
        request_id=ctx.request_id,
        client_ip=ctx.client_ip,
        surface="dashboard",
        principal=principal,
        **fields,
    )


async def notice(request: web.Request, event: str, *args: object) -> None:
    """Queue the notification of an event (section 7.1) just audited; never sends from here."""
    notifier = _services(request).notifier
    if notifier is not None:
        await getattr(notifier, event)(context_of(request).snapshot, *args)


def _country(request: web.Request) -> str | None:
    """The client's country for a notification (GeoIP of the security service, if running)."""
    return country_of(_services(request), context_of(request).client_ip)


def _logout_footer(request: web.Request, ctx: RequestContext) -> str:
    return forms.logout_form(_url(ctx, "logout"), _services(request).csrf.field(request))


def _sealer(request: web.Request):  # type: ignore[no-untyped-def]
    return _services(request).secret_key.sealer(SEALER_PURPOSE)


async def _session_user(request: web.Request, stages: set[str]) -> tuple[Session, User] | None:
    session = await get_session(request)
    ctx = context_of(request)
    user = login_state(session, ctx)
    if user is None or session.get("stage") not in stages:
        return None
    if session.get("pwv") != password_version(user):
        return None
    return session, user


def _hashing(request: web.Request, ctx: RequestContext) -> accounts.HashRunner:
    """Hashing for this request, on the guard's pool, queued behind its own client address."""
    return functools.partial(_services(request).signin.hash_work, ctx.client_ip)


async def _regulated(
    request: web.Request,
    ctx: RequestContext,
    name: str,
    verify: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool] = bool,
) -> tuple[regulation.Attempt, T]:
    """Check a secret as one regulated attempt (raises `regulation.Refused`)."""
    services = _services(request)
    rules = ctx.snapshot.policy.login_regulation
    return await services.signin.check(
        services.store, rules, name, ctx.client_ip, time.time(), verify, ok
    )


async def _regulated_code(
    request: web.Request, ctx: RequestContext, user: User, code: str
) -> tuple[regulation.Attempt, accounts.SecondFactor]:
    """Check a TOTP or recovery code as one regulated attempt (raises `regulation.Refused`)."""
    store, now = _services(request).store, time.time()
    return await _regulated(
        request,
        ctx,
        user.name,
        lambda: accounts.verify_second_factor(
            store, _sealer(request), user.name, code, now, _hashing(request, ctx)
        ),
        lambda result: result.ok,
    )


def _audit_failure(
    request: web.Request,
    event: str,
    principal: str | None,
    attempt: regulation.Attempt,
    **fields: object,
) -> None:
    """The failure, and the ban it caused if it did (`page`, if given, goes to both)."""
    audit(
        request,
        event,
        principal=principal,
        decision="deny:unauthenticated",
        remaining=attempt.remaining,
        **fields,
    )
    if attempt.banned:
        where = {"page": fields["page"]} if "page" in fields else {}
        audit(
            request,
            "login.banned",
            principal=principal,
            decision="deny:too_many_attempts",
            subjects=attempt.banned,
            **where,
        )


def _minutes(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _failure_message(first: str, attempt: regulation.Attempt, rules: LoginRegulation) -> str:
    """What a failed attempt says: how many remain, or that sign-in is now paused."""
    if attempt.banned:
        return f"{first} Too many failed attempts: sign-in is paused for {_minutes(rules.ban)}."
    left = attempt.remaining
    return f"{first} {left} attempt{'s' if left != 1 else ''} left before sign-in is paused."


def _too_many(
    render: Callable[[str, int], web.Response], refused: regulation.Refused, now: float
) -> web.Response:
    if refused.banned_until is not None:
        wait = refused.banned_until - now
        message = f"Too many failed attempts. Try again in {_minutes(wait)}."
    else:
        wait = 60.0
        message = "Too many sign-in attempts at once. Try again in a minute."
    response = render(message, 429)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


def _back_to_login(ctx: RequestContext) -> web.HTTPFound:
    return web.HTTPFound(_url(ctx, "login"))


async def advance(request: web.Request, session: Session, user: User) -> web.StreamResponse:
    """Send a signed-in-so-far user to their next step, or finish the sign-in."""
    ctx = context_of(request)
    services = _services(request)
    now = time.time()
    reason = await accounts.must_change_password(services.store, user, now)
    if reason is not None:
        session["stage"], session["pw_reason"] = "password", reason
        raise web.HTTPFound(_url(ctx, "password"))
    session.pop("pw_reason", None)
    is_enrolled = await accounts.enrolled(services.store, user.name)
    if is_enrolled and session.get("auth") != "password+totp":
        session["stage"] = "totp"
        raise web.HTTPFound(_url(ctx, "2fa/verify"))
    if not is_enrolled and user.requires_2fa:
        session["stage"] = "enroll"
        raise web.HTTPFound(_url(ctx, "2fa/enroll"))
    if session.get("stage") != "done":
        # Only a complete sign-in clears the user's failure count: clearing it after the
        # password would let whoever knows the password guess codes without ever being banned.
        await accounts.unlock(services.store, user.name)
        if not session.new:
            # The sign-in finishes on a session loaded from a cookie (code prompt, enrollment,
            # forced password change): move it to a new id, so an id planted or seen before
            # this point is not the one that gets signed in.
            data = dict(session)
            session = await fresh_session(request)
            session.update(data)
        session["stage"] = "done"
        session.setdefault("auth", "password")
        ctx.principal, ctx.auth = user.name, session["auth"]
        audit(
            request,
            "login.success",
            principal=user.name,
            auth=session["auth"],
            decision="allow",
            user_agent=request.headers.get("User-Agent", "")[:256],
        )
        services.metrics.logins.labels("success").inc()
        await _record_sign_in(request, user, "success")
    raise web.HTTPFound(session.pop("next", None) or "/")


async def _record_sign_in(request: web.Request, user: User, result: str) -> None:
    """Sign-in history and incident detection (services/security) for an attempt that got past
    the password step."""
    ctx = context_of(request)
    await _services(request).security.record_sign_in(
        user,
        result,
        ctx.client_ip,
        request.headers.get("User-Agent", ""),
        request_id=ctx.request_id,
    )


# -- login / logout ----------------------------------------------------------------------------


async def login(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    services = _services(request)
    if request.method in ("GET", "HEAD"):
        next_ = safe_next(request.query.get("next"), ctx.snapshot.prefix)
        # The same test as the gate: a session the gate refuses (2FA now required, password
        # reset by an admin) gets the form, not a redirect back to `next` and round again.
        if await current_login(request, ctx) is not None:
            raise web.HTTPFound(next_)
        return _html(
            forms.login(_url(ctx, "login"), services.csrf.field(request), next_, brand=_brand(ctx))
        )

    form = await request.post()
    username = str(form.get("username", "")).strip()[:128]
    password = str(form.get("password", ""))
    next_ = safe_next(str(form.get("next", "")), ctx.snapshot.prefix)
    now = time.time()
    user = ctx.snapshot.users.get(username)
    rules = ctx.snapshot.policy.login_regulation

    def again(error: str, status: int) -> web.Response:
        return _html(
            forms.login(
                _url(ctx, "login"),
                services.csrf.field(request),
                next_,
                username,
                error,
                brand=_brand(ctx),
            ),
            status,
        )

    try:
        # Unknown names cost a (dummy) hash too: the answer's timing does not tell.
        attempt, ok = await _regulated(
            request,
            ctx,
            username,
            lambda: accounts.check_password(services.store, user, password, _hashing(request, ctx)),
            lambda ok: ok and user is not None,
        )
    except regulation.Refused as refused:
        # Known and unknown names answer alike: a ban must not tell whether the user exists.
        services.metrics.logins.labels("banned").inc()
        audit(
            request,
            "login.banned",
            principal=user.name if user else None,
            decision="deny:too_many_attempts",
            until=round(refused.banned_until) if refused.banned_until else None,
        )
        return _too_many(again, refused, now)

    if not ok or user is None:
        services.metrics.logins.labels("failure").inc()
        _audit_failure(
            request,
            "login.failure",
            user.name if user else None,
            attempt,
            reason="wrong username or password",
            known_user=user is not None,
        )
        if user is not None:
            await notice(
                request,
                "login_failed",
                user.name,
                ctx.client_ip,
                _country(request),
                "wrong password",
            )
        return again(_failure_message("Wrong username or password.", attempt, rules), 401)

    session = await fresh_session(request)
    session.update(
        {"user": user.name, "pwv": password_version(user), "stage": "password-ok", "next": next_}
    )
    return await advance(request, session, user)


async def logout(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    services = _services(request)
    if request.method in ("GET", "HEAD"):
        body = (
            "<h1>Sign out</h1><p>Sign out of every app behind this gateway?</p>"
            + forms.logout_form(_url(ctx, "logout"), services.csrf.field(request))
            + f'<p><a href="{escape(_url(ctx, "account"))}">Stay signed in: your account</a></p>'
        )
        return _html(page("Sign out", body, brand=_brand(ctx)))
    session = await get_session(request)
    user = session.get("user")
    if user:
        audit(request, "session.revoked", principal=user, reason="logout")
    if session.identity:
        services.forwarder.sockets.end_session(session_hash(session.identity))
    session.invalidate()
    return _html(
        forms.login(
            _url(ctx, "login"),
            services.csrf.field(request),
            "/",
            notice="You are signed out.",
            brand=_brand(ctx),
        )
    )


# -- 2FA ---------------------------------------------------------------------------------------


def _banned_out(request: web.Request, session: Session, user: str) -> web.Response:
    """A ban during the second step ends the half-finished sign-in."""
    ctx = context_of(request)
    audit(request, "login.banned", principal=user, decision="deny:too_many_attempts")
    session.invalidate()
    page_ = forms.login(
        _url(ctx, "login"),
        _services(request).csrf.field(request),
        "/",
        error="Too many failed attempts. Try again later.",
        brand=_brand(ctx),
    )
    return _html(page_, 429)


async def verify(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    services = _services(request)
    found = await _session_user(request, {"totp"})
    if found is None:
        raise _back_to_login(ctx)
    session, user = found
    action = _url(ctx, "2fa/verify")
    if request.method in ("GET", "HEAD"):
        return _html(
            forms.verify(
                action,
                services.csrf.field(request),
                logout=_logout_footer(request, ctx),
                brand=_brand(ctx),
            )
        )
    form = await request.post()
    code = str(form.get("code", ""))[:64]
    rules = ctx.snapshot.policy.login_regulation
    try:
        attempt, result = await _regulated_code(request, ctx, user, code)
    except regulation.Refused:
        services.metrics.logins.labels("banned").inc()
        await _record_sign_in(request, user, "banned")
        return _banned_out(request, session, user.name)
    if not result.ok:
        audit(
            request,
            "totp.failure",
            principal=user.name,
            decision="deny:unauthenticated",
            replayed=result.replayed or None,
            remaining=attempt.remaining,
        )
        await _record_sign_in(request, user, "failure")
        await notice(
            request, "login_failed", user.name, ctx.client_ip, _country(request), "wrong 2FA code"
        )
        if attempt.banned:
            return _banned_out(request, session, user.name)
        error = (
            "That code was already used. Wait for the next one."
            if result.replayed
            else "That code is not valid. Check your app and try again."
        )
        return _html(
            forms.verify(
                action,
                services.csrf.field(request),
                _failure_message(error, attempt, rules),
                logout=_logout_footer(request, ctx),
                brand=_brand(ctx),
            ),
            401,
        )
    session["auth"] = "password+totp"
    if result.method != "recovery_code":
        return await advance(request, session, user)
    audit(
        request,
        "totp.recovery_code_used",
        principal=user.name,
        decision="allow",
        remaining=result.recovery_codes_left,
    )
    try:
        return await advance(request, session, user)
    except web.HTTPFound as done:
        # Tell the person before they go on: each code works once, and they may be running out.
        left = result.recovery_codes_left or 0
        account = escape(_url(ctx, "account"))
        body = (
            f"<h1>Signed in with a recovery code</h1>"
            f'<div class="notice" role="status">That code is now used up. '
            f"You have <strong>{left}</strong> recovery code{'s' if left != 1 else ''} "
            f'left.</div><p>If you lost your phone, <a href="{account}">set up a new '
            f"one and get new recovery codes</a> on your account page.</p>"
            f'<a class="button" href="{escape(done.location)}">Continue</a>'
        )
        return _html(page("Signed in with a recovery code", body))


async def enroll(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    services = _services(request)
    found = await _session_user(request, {"enroll", "done"})
    if found is None:
        raise _back_to_login(ctx)
    session, user = found
    moving = False
    if await accounts.enrolled(services.store, user.name):
        opened = session.get(MOVING_PHONE)
        moving = (
            session["stage"] == "done"
            and isinstance(opened, int | float)
            and 0 <= time.time() - opened < MOVE_WINDOW
        )
        if not moving and session["stage"] == "done":
            session.pop(MOVING_PHONE, None)
            raise web.HTTPFound(_url(ctx, "account"))
        if not moving:
            # Enrolled since this interstitial began (elsewhere, or here already): a
            # password-only session must not replace the authenticator; advance() asks for a
            # code instead.
            return await advance(request, session, user)
    sealer = _sealer(request)
    pending = session.get(PENDING_SECRET)
    secret = accounts.open_secret(sealer, user.name, pending) if pending else None
    if secret is None:
        secret = totp.new_secret()
        session[PENDING_SECRET] = accounts.seal_secret(sealer, user.name, secret)
    issuer = ctx.snapshot.policy.two_factor.issuer
    account = user.email or user.name
    uri = totp.provisioning_uri(secret, account, issuer)

    def render(error: str | None = None, status: int = 200) -> web.Response:
        return _html(
            forms.enroll(
                _url(ctx, "2fa/enroll"),
                services.csrf.field(request),
                qr_svg=totp.qr_svg(uri),
                secret=secret,
                uri=uri,
                issuer=issuer,
                account=account,
                required=user.requires_2fa,
                error=error,
                logout=_logout_footer(request, ctx),
                moving=moving,
                back=_url(ctx, "account") if moving else "",
            ),
            status,
        )

    if request.method in ("GET", "HEAD"):
        return render()
    form = await request.post()
    if moving:
        code = str(form.get("code", ""))[:64]
        if not await accounts.replace_authenticator(
            services.store, sealer, user.name, secret, code, time.time()
        ):
            return render(
                "That code does not match. Check the time on your new phone and try again.", 401
            )
        session.pop(PENDING_SECRET, None)
        session.pop(MOVING_PHONE, None)
        session["auth"] = "password+totp"
        audit(request, "totp.enrolled", principal=user.name, decision="allow", moved=True)
        session["notice"] = "Your new phone is set up. Codes from the old phone no longer work."
        raise web.HTTPFound(_url(ctx, "account"))
    try:
        codes = await accounts.enroll(
            services.store,
            sealer,
            user.name,
            secret,
            str(form.get("code", ""))[:64],
            time.time(),
        )
    except accounts.AlreadyEnrolled:
        return await advance(request, session, user)
    if codes is None:
        return render("That code does not match. Check the time on your phone and try again.", 401)
    session.pop(PENDING_SECRET, None)
    audit(request, "totp.enrolled", principal=user.name, decision="allow")
    if session["stage"] == "enroll":
        session["auth"] = "password+totp"
        continue_to = _url(ctx, "2fa/continue")
    else:
        session["auth"] = "password+totp"
        continue_to = _url(ctx, "account")
    return _html(forms.recovery_codes(codes, continue_to))


async def enrolled_continue(request: web.Request) -> web.StreamResponse:
    """After the recovery codes were shown: finish the sign-in."""
    ctx = context_of(request)
    found = await _session_user(request, {"enroll"})
    if found is None:
        raise _back_to_login(ctx)
    session, user = found
    return await advance(request, session, user)


# -- password ----------------------------------------------------------------------------------


def describe_rules(rules: PasswordRules) -> str:
    parts = [f"At least {rules.min_length} characters"]
    if rules.min_strength:
        parts.append("hard to guess (avoid names, dates and common words)")
    if rules.history:
        parts.append(f"not one of your last {rules.history} passwords")
    return "; ".join(parts) + "."


async def change_password(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    services = _services(request)
    found = await _session_user(request, {"password", "done"})
    if found is None:
        raise _back_to_login(ctx)
    session, user = found
    forced = session["stage"] == "password"

    def render(errors: list[str] | None = None, notice: str | None = None, status: int = 200):  # type: ignore[no-untyped-def]
        return _html(
            forms.password(
                _url(ctx, "password"),
                services.csrf.field(request),
                reason=session.get("pw_reason") if forced else None,
                rules=describe_rules(user.password_rules),
                errors=errors or (),
                notice=notice,
                logout=_logout_footer(request, ctx),
                back=None if forced else _url(ctx, "account"),
            ),
            status,
        )

    if request.method in ("GET", "HEAD"):
        return render()
    form = await request.post()
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    confirm = str(form.get("new_password_confirm", ""))
    rules = ctx.snapshot.policy.login_regulation
    try:
        attempt, ok = await _regulated(
            request,
            ctx,
            user.name,
            lambda: accounts.check_password(services.store, user, current, _hashing(request, ctx)),
        )
    except regulation.Refused:
        audit(
            request,
            "login.banned",
            principal=user.name,
            decision="deny:too_many_attempts",
            page="password",
        )
        return render(["Too many failed attempts. Try again later."], status=429)
    if not ok:
        _audit_failure(
            request,
            "login.failure",
            user.name,
            attempt,
            reason="wrong current password on the password page",
            page="password",
        )
        message = _failure_message("Your current password is not correct.", attempt, rules)
        return render([message], status=400)
    if new != confirm:
        return render(["The two new passwords are not the same."], status=400)
    violations = await accounts.change_password(
        services.store, user, new, time.time(), _hashing(request, ctx)
    )
    if violations:
        return render([v.message for v in violations], status=400)
    audit(request, "password.changed", principal=user.name, decision="allow", forced=forced or None)
    await notice(request, "password_changed", user.name, ctx.client_ip)
    if forced:
        return await advance(request, session, user)
    return render(notice="Your password was changed.")


# -- account -----------------------------------------------------------------------------------


async def account(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    services = _services(request)
    found = await _session_user(request, {"done"})
    if found is None:
        raise _back_to_login(ctx)
    session, user = found
    error = notice = None
    if request.method == "POST":
        form = await request.post()
        action = str(form.get("action", ""))
        code = str(form.get("code", ""))[:64]
        if action == "disable_2fa" and user.requires_2fa:
            error = "Your organisation requires two-factor authentication; it cannot be off."
        elif action in ("regenerate_codes", "disable_2fa", "reenroll_2fa"):
            # Wrong codes count here as on the code prompt, or a stolen session could guess
            # its way to replacing the authenticator.
            error = await _check_current_code(request, ctx, user, code)
            if error is not None:
                pass
            elif action == "regenerate_codes":
                codes = await accounts.new_recovery_codes(services.store, user.name, time.time())
                audit(
                    request,
                    "totp.recovery_codes_regenerated",
                    principal=user.name,
                    decision="allow",
                )
                return _html(forms.recovery_codes(codes, _url(ctx, "account"), regenerated=True))
            elif action == "reenroll_2fa":
                # The old authenticator stays until the new one is confirmed (docs/http.md):
                # the code just checked only opens the move, for a few minutes.
                session[MOVING_PHONE] = time.time()
                session.pop(PENDING_SECRET, None)
                raise web.HTTPFound(_url(ctx, "2fa/enroll"))
            else:
                await services.store.totp_delete(user.name)
                audit(
                    request,
                    "totp.reset",
                    principal=user.name,
                    decision="allow",
                    by="user",
                )
                session["auth"] = "password"
                notice = "Two-factor authentication is off."
    notice = notice or session.pop("notice", None)
    return _html(await _account_page(request, ctx, user, error, notice))


async def _check_current_code(
    request: web.Request, ctx: RequestContext, user: User, code: str
) -> str | None:
    """Check a current TOTP or recovery code as one regulated attempt; None when it is right."""
    rules = ctx.snapshot.policy.login_regulation
    try:
        attempt, result = await _regulated_code(request, ctx, user, code)
    except regulation.Refused:
        audit(
            request,
            "login.banned",
            principal=user.name,
            decision="deny:too_many_attempts",
            page="account",
        )
        return "Too many failed attempts. Try again later."
    if result.ok:
        return None
    _audit_failure(request, "totp.failure", user.name, attempt, page="account")
    return _failure_message(
        "That code is not valid. Enter a current code from your app.", attempt, rules
    )


async def _account_page(
    request: web.Request, ctx: RequestContext, user: User, error: str | None, notice: str | None
) -> str:
    services = _services(request)
    csrf = services.csrf.field(request)
    action = escape(_url(ctx, "account"))
    record = await services.store.totp_get(user.name)
    alerts = (f'<div class="error" role="alert">{escape(error)}</div>' if error else "") + (
        f'<div class="notice" role="status">{escape(notice)}</div>' if notice else ""
    )

    def code_form(act: str, label: str, cls: str = "secondary") -> str:
        return (
            f'<form method="post" action="{action}">{csrf}'
            f'<input type="hidden" name="action" value="{act}">'
            f'<label for="code-{act}">Current code for “{escape(label)}”</label>'
            f'<input type="text" id="code-{act}" name="code" autocomplete="one-time-code" '
            f'inputmode="numeric" required><button type="submit" class="{cls}">'
            f"{escape(label)}</button></form>"
        )

    if record is None:
        two_fa = (
            "<p>Two-factor authentication is <strong>off</strong>.</p>"
            f'<p><a href="{escape(_url(ctx, "2fa/enroll"))}">Turn it on</a></p>'
        )
    else:
        left = sum(1 for c in await services.store.recovery_codes(user.name) if c.used_at is None)
        two_fa = (
            f"<p>Two-factor authentication is <strong>on</strong>. "
            f"{left} recovery codes left.</p>"
            + code_form("regenerate_codes", "New recovery codes")
            + code_form("reenroll_2fa", "Move to a new phone")
        )
        if not user.requires_2fa:
            two_fa += code_form("disable_2fa", "Turn off two-factor authentication")
    admin = (
        f'<h2>Gateway admin</h2><p><a href="{escape(_url(ctx, "admin/"))}">Open the admin '
        "console</a>: incidents, users, trusted IPs, audit search.</p>"
        if user.admin
        else ""
    )
    body = (
        f"<h1>Your account</h1>{alerts}<p>Signed in as <strong>{escape(user.name)}</strong>"
        f"{' (' + escape(user.email) + ')' if user.email else ''}.</p>"
        f'<h2>Password</h2><p><a href="{escape(_url(ctx, "password"))}">'
        f"Change your password</a></p><h2>Two-factor authentication</h2>{two_fa}{admin}"
    )
    return page("Your account", body, footer=_logout_footer(request, ctx), brand=_brand(ctx))


def register(pages) -> None:  # type: ignore[no-untyped-def]
    pages.add("login", login, "dashboard", ("GET", "POST"))
    pages.add("logout", logout, "dashboard", ("GET", "POST"))
    pages.add("2fa/verify", verify, "dashboard", ("GET", "POST"))
    pages.add("2fa/enroll", enroll, "dashboard", ("GET", "POST"))
    pages.add("2fa/continue", enrolled_continue, "dashboard", ("GET",))
    pages.add("password", change_password, "dashboard", ("GET", "POST"))
    pages.add("account", account, "dashboard", ("GET", "POST"))
