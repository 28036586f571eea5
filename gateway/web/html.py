"""The one page layout of the gateway's own pages: plain, accessible HTML that works without
JavaScript, and the one small stylesheet every page carries (sign-in, 2FA, account, error pages
and the admin console look alike).

The stylesheet is inline, not a file served under {prefix}: error pages are answered at any path
(an app's 403, a 404 anywhere) and must look the same without a second request through the
gateway's allowlist. The only script is the optional copy/print helper of the recovery codes
page; pages.PAGE_HEADERS allows exactly it by its hash.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

_CSS = """
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#f4f5f7;--card:#fff;--muted:#57606a;
--accent:#0b5cad;--on-accent:#fff;--bad:#b42318;--good:#067647;--warn:#8a5300;--line:#d0d7de;
--soft:#eef2f7}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--card:#161b22;
--muted:#9da7b3;--accent:#58a6ff;--on-accent:#0d1117;--bad:#ff7b72;--good:#3fb950;
--warn:#e3b341;--line:#30363d;--soft:#1f2630}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:30rem;margin:8vh auto;padding:0 1rem}
main.wide{max-width:72rem;margin-top:1.5rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1.75rem}
.brand{margin:0 0 .25rem;color:var(--muted);font-size:.9rem;font-weight:600;letter-spacing:.02em}
h1{font-size:1.4rem;margin:0 0 1rem}
h2{font-size:1.1rem;margin:1.75rem 0 .5rem}
p{margin:.5rem 0}
a{color:var(--accent);text-underline-offset:.15em}
.muted{color:var(--muted);font-size:.9rem}
label{display:block;font-weight:600;margin:1rem 0 .25rem}
input[type=text],input[type=password],input[type=email],input[type=search],select,textarea{
width:100%;padding:.55rem .7rem;font:inherit;border:1px solid var(--muted);border-radius:6px;
background:var(--card);color:var(--fg)}
input:focus,button:focus,a:focus,select:focus,textarea:focus,summary:focus{
outline:3px solid var(--accent);outline-offset:2px}
button,a.button{display:block;margin-top:1.25rem;width:100%;padding:.65rem;font:inherit;
font-weight:600;border:1px solid var(--accent);border-radius:6px;background:var(--accent);
color:var(--on-accent);cursor:pointer;text-align:center;text-decoration:none}
button.secondary,a.button.secondary{background:transparent;color:var(--accent)}
button.danger{background:var(--bad);border-color:var(--bad);color:var(--on-accent)}
button.small,a.button.small{display:inline-block;width:auto;margin:0;padding:.2rem .6rem;
font-size:.85rem}
main.wide form button:not(.small){display:inline-block;width:auto;padding:.55rem 1.5rem}
main.wide input[type=text],main.wide textarea{max-width:36rem}
td.nowrap,.nowrap{white-space:nowrap}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin-top:1rem}
.actions button,.actions a.button{width:auto;margin:0}
.error{color:var(--bad);border-left:4px solid var(--bad);padding:.4rem .8rem;margin:1rem 0}
.notice{color:var(--good);border-left:4px solid var(--good);padding:.4rem .8rem;margin:1rem 0}
.banner{border:2px solid var(--bad);border-radius:8px;padding:.75rem 1rem;margin:0 0 1rem;
font-weight:600}
.warn{color:var(--warn)}.bad{color:var(--bad)}.good{color:var(--good)}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.secret{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere;word-break:normal}
.qr{max-width:14rem;margin:1rem auto;background:#fff;padding:.5rem;border-radius:6px}
.qr svg{width:100%;height:auto;display:block}
ol.codes{columns:2;font-family:ui-monospace,monospace;font-size:1.05rem}
table{border-collapse:collapse;width:100%;font-size:.92rem}
caption{text-align:left;font-weight:600;padding:.25rem 0}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--soft)}
.scroll{overflow-x:auto}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:.5rem 0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
form.filters{display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:0 1rem}
form.filters label{margin-top:.5rem}form.filters .actions{grid-column:1/-1}
form.inline{display:inline}
nav.top{display:flex;flex-wrap:wrap;gap:.25rem 1.25rem;align-items:center;margin:0 0 1rem}
nav.top .who{margin-left:auto}
nav.top a[aria-current=page]{font-weight:700;text-decoration:none;color:var(--fg)}
footer{margin-top:1rem;text-align:center}
footer form button{display:inline-block;width:auto}
.print-only{display:none}
@media print{body{background:#fff;color:#000}main{margin:0;max-width:none}
.card{border:0;padding:0}.no-print,footer,nav{display:none!important}.print-only{display:block}}
"""

#: The recovery codes page's optional helper: shows the Copy and Print buttons (hidden without
#: JavaScript, where the download link and the browser's own print remain).
COPY_SCRIPT = (
    "document.querySelectorAll('[data-copy-target],[data-print]').forEach(function(b){"
    "b.hidden=false;b.addEventListener('click',function(){"
    "if(b.dataset.print!==undefined){window.print();return;}"
    "var t=document.getElementById(b.dataset.copyTarget).innerText;"
    "navigator.clipboard.writeText(t).then(function(){b.textContent='Copied';},"
    "function(){b.textContent='Copy failed: select the codes and copy them';});});});"
)
_DIGEST = hashlib.sha256(COPY_SCRIPT.encode()).digest()
COPY_SCRIPT_HASH = "sha256-" + base64.b64encode(_DIGEST).decode("ascii")


def page(
    title: str,
    body: str,
    *,
    wide: bool = False,
    footer: str = "",
    brand: str = "",
    nav: str = "",
    script: bool = False,
) -> str:
    """A complete HTML document. `body`, `footer` and `nav` are trusted markup built with
    escape(); `brand` is text (the product or app name shown above the heading)."""
    cls = ' class="wide"' if wide else ""
    foot = f"<footer class='muted'>{footer}</footer>" if footer else ""
    top = f'<p class="brand">{escape(brand)}</p>' if brand else ""
    tail = f"<script>{COPY_SCRIPT}</script>" if script else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f'<body><main{cls}>{nav}<div class="card">{top}{body}</div>{foot}</main>{tail}'
        "</body></html>\n"
    )


def link(href: str, text: str, *, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<a href="{escape(href)}"{klass}>{escape(text)}</a>'


def message_page(
    title: str,
    text: str,
    request_id: str | None,
    *,
    facts: list[tuple[str, str]] | None = None,
    links: list[tuple[str, str]] | None = None,
    brand: str = "",
) -> str:
    """An error or notice page: what happened, the facts (who is signed in, what was denied),
    and a way back (`links`: (href, text), the first one shown as the main button)."""
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts or ())
    dl = f'<dl class="facts">{rows}</dl>' if rows else ""
    ways = ""
    if links:
        first, *rest = links
        ways = '<div class="actions">' + link(first[0], first[1], cls="button")
        ways += "".join(link(h, t, cls="button secondary") for h, t in rest) + "</div>"
    ref = f'<p class="muted">Reference: <code>{escape(request_id)}</code></p>' if request_id else ""
    body = f"<h1>{escape(title)}</h1><p>{escape(text)}</p>{dl}{ways}{ref}"
    return page(title, body, brand=brand)
