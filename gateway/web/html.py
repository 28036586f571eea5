"""The one page layout of the gateway's own pages: plain, accessible HTML, no JavaScript."""

from __future__ import annotations

from html import escape

_CSS = """
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#f4f5f7;--card:#fff;--muted:#57606a;
--accent:#0b5cad;--bad:#b42318;--good:#067647;--line:#d0d7de}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--card:#161b22;
--muted:#9da7b3;--accent:#58a6ff;--bad:#ff7b72;--good:#3fb950;--line:#30363d}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:30rem;margin:8vh auto;padding:0 1rem}
main.wide{max-width:60rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1.75rem}
h1{font-size:1.4rem;margin:0 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
p{margin:.5rem 0}
.muted{color:var(--muted);font-size:.9rem}
label{display:block;font-weight:600;margin:1rem 0 .25rem}
input[type=text],input[type=password],input[type=email]{width:100%;padding:.6rem .7rem;
font:inherit;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
input:focus,button:focus,a:focus{outline:3px solid var(--accent);outline-offset:2px}
button{margin-top:1.25rem;width:100%;padding:.65rem;font:inherit;font-weight:600;border:0;
border-radius:6px;background:var(--accent);color:#fff;cursor:pointer}
button.secondary{background:transparent;color:var(--accent);border:1px solid var(--line)}
.error{color:var(--bad);border-left:4px solid var(--bad);padding:.4rem .8rem;margin:1rem 0}
.notice{color:var(--good);border-left:4px solid var(--good);padding:.4rem .8rem;margin:1rem 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.secret{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere;word-break:normal}
.qr{max-width:14rem;margin:1rem auto;background:#fff;padding:.5rem;border-radius:6px}
.qr svg{width:100%;height:auto;display:block}
ol.codes{columns:2;font-family:ui-monospace,monospace;font-size:1.05rem}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
nav{margin-bottom:1rem}nav a{margin-right:1rem}
footer{margin-top:1rem;text-align:center}
"""


def page(title: str, body: str, *, wide: bool = False, footer: str = "") -> str:
    """A complete HTML document. `body` and `footer` are trusted markup built with escape()."""
    cls = ' class="wide"' if wide else ""
    foot = f"<footer class='muted'>{footer}</footer>" if footer else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f'<body><main{cls}><div class="card">{body}</div>{foot}</main></body></html>\n'
    )


def message_page(title: str, text: str, request_id: str | None) -> str:
    ref = f'<p class="muted">Reference: <code>{escape(request_id)}</code></p>' if request_id else ""
    return page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>{ref}")
