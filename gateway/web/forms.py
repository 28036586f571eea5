"""The sign-in pages' markup (docs/http.md): plain forms, a label for every field, the
autocomplete hints password managers rely on, a hidden CSRF token, no JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote

from gateway.web.html import page


def _alert(error: str | None, notice: str | None = None) -> str:
    out = ""
    if error:
        out += f'<div class="error" role="alert">{escape(error)}</div>'
    if notice:
        out += f'<div class="notice" role="status">{escape(notice)}</div>'
    return out


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{escape(value)}">'


def login(
    action: str,
    csrf: str,
    next_: str,
    username: str = "",
    error: str | None = None,
    notice: str | None = None,
    brand: str = "",
) -> str:
    """`brand`: the product's name (two_factor.issuer), shown above the heading."""
    body = f"""<h1>Sign in</h1>{_alert(error, notice)}
<form method="post" action="{escape(action)}">{csrf}{_hidden("next", next_)}
<label for="username">Username</label>
<input type="text" id="username" name="username" autocomplete="username" autocapitalize="none"
 spellcheck="false" required autofocus value="{escape(username)}">
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>"""
    return page(f"Sign in · {brand}" if brand else "Sign in", body, brand=brand)


def verify(
    action: str, csrf: str, error: str | None = None, logout: str = "", brand: str = ""
) -> str:
    body = f"""<h1>Two-factor authentication</h1>{_alert(error)}
<p>Enter the 6-digit code from your authenticator app.</p>
<form method="post" action="{escape(action)}">{csrf}
<label for="code">Authentication code</label>
<input type="text" id="code" name="code" autocomplete="one-time-code" inputmode="numeric"
 autocapitalize="none" spellcheck="false" required autofocus aria-describedby="code-help">
<p id="code-help" class="muted">Lost your phone? Enter one of your recovery codes instead.</p>
<button type="submit">Verify</button></form>"""
    return page("Two-factor authentication", body, footer=logout, brand=brand)


def enroll(
    action: str,
    csrf: str,
    *,
    qr_svg: str,
    secret: str,
    uri: str,
    issuer: str,
    account: str,
    required: bool,
    error: str | None = None,
    logout: str = "",
    moving: bool = False,
    back: str = "",
) -> str:
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    if moving:
        title, button = "Move to a new phone", "Confirm the new phone"
        why = (
            "Set up the authenticator app on your new phone. Your current phone keeps working "
            "until you confirm the new one here; after that, only the new phone's codes work. "
            "Your recovery codes stay the same."
        )
    else:
        title, button = "Set up two-factor authentication", "Confirm and turn on"
        why = (
            "Your organisation requires two-factor authentication. Set it up to continue."
            if required
            else "Add an extra step to your sign-in."
        )
    cancel = (
        f'<p><a href="{escape(back)}">Cancel and keep your current phone</a></p>' if back else ""
    )
    body = f"""<h1>{escape(title)}</h1>{_alert(error)}
<p>{escape(why)}</p>
<ol>
<li>Open an authenticator app (Google Authenticator, Authy, 1Password, ...) and scan this code.
<div class="qr">{qr_svg}</div></li>
<li>Can't scan? Enter this key by hand:
<p class="secret" id="secret" data-totp-secret="{escape(secret)}">
<strong>{escape(grouped)}</strong></p>
<p class="muted">The app will show it as <strong>{escape(issuer)}</strong> ({escape(account)}).
On your phone you can also <a href="{escape(uri)}">open it in your authenticator app</a>.</p></li>
<li>Enter the 6-digit code the app shows to confirm.</li>
</ol>
<form method="post" action="{escape(action)}">{csrf}
<label for="code">Code from the app</label>
<input type="text" id="code" name="code" autocomplete="one-time-code" inputmode="numeric"
 autocapitalize="none" spellcheck="false" required>
<button type="submit">{escape(button)}</button></form>{cancel}"""
    return page(title, body, footer=logout)


def recovery_codes(codes: Sequence[str], continue_to: str, *, regenerated: bool = False) -> str:
    """Shown once. Copy and Print are buttons of the optional script (hidden without it); the
    download is a data: link and printing without the script is the browser's own (the print
    style sheet leaves only the codes on paper)."""
    items = "".join(
        f'<li><code data-recovery-code="{escape(c)}">{escape(c)}</code></li>' for c in codes
    )
    lead = (
        "Your new recovery codes replace the old ones."
        if regenerated
        else "Two-factor authentication is on."
    )
    text = "Recovery codes (each works once):\n" + "\n".join(codes) + "\n"
    download = "data:text/plain;charset=utf-8," + quote(text)
    body = f"""<h1>Save your recovery codes</h1>
<div class="notice no-print" role="status">{escape(lead)}</div>
<p class="no-print">If you lose your phone, each of these codes signs you in once. Store them
somewhere safe, like a password manager. <strong>They are shown only this once.</strong></p>
<p class="print-only">Recovery codes: each signs you in once.</p>
<ol class="codes" id="recovery-codes">{items}</ol>
<div class="actions no-print">
<a class="button secondary" href="{escape(download)}" download="recovery-codes.txt">Download</a>
<button type="button" class="secondary" data-copy-target="recovery-codes" hidden>Copy</button>
<button type="button" class="secondary" data-print hidden>Print</button>
</div>
<p class="muted no-print">To print them, print this page: only the codes go on paper.</p>
<a class="button no-print" href="{escape(continue_to)}">I have saved my codes — continue</a>"""
    return page("Save your recovery codes", body, script=True)


def password(
    action: str,
    csrf: str,
    *,
    reason: str | None,
    rules: str,
    errors: Sequence[str] = (),
    notice: str | None = None,
    logout: str = "",
    back: str | None = None,
) -> str:
    """`back`: where "Back to your account" leads (None while the change is forced)."""
    problems = ""
    if errors:
        items = "".join(f"<li>{escape(e)}</li>" for e in errors)
        problems = f'<div class="error" role="alert"><ul>{items}</ul></div>'
    lead = f"<p>{escape(reason)}</p>" if reason else ""
    body = f"""<h1>Change your password</h1>{lead}{problems}{_alert(None, notice)}
<form method="post" action="{escape(action)}">{csrf}
<label for="current_password">Current password</label>
<input type="password" id="current_password" name="current_password"
 autocomplete="current-password" required>
<label for="new_password">New password</label>
<input type="password" id="new_password" name="new_password" autocomplete="new-password" required
 aria-describedby="rules">
<p id="rules" class="muted">{escape(rules)}</p>
<label for="new_password_confirm">New password again</label>
<input type="password" id="new_password_confirm" name="new_password_confirm"
 autocomplete="new-password" required>
<button type="submit">Change password</button></form>"""
    if back:
        body += f'<p><a href="{escape(back)}">Back to your account</a></p>'
    return page("Change your password", body, footer=logout)


def logout_form(action: str, csrf: str) -> str:
    return (
        f'<form method="post" action="{escape(action)}">{csrf}'
        '<button type="submit" class="secondary">Sign out</button></form>'
    )
