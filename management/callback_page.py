"""The page an authorisation ends on, in the popup the frontend opened.

It tells the opener how the flow ended, in the messages `@nangohq/frontend` and the
Connect UI listen for: `{type: 'nango_oauth_callback_success'}` or
`{type: 'nango_oauth_callback_error', payload: {message, errorType}}`, posted to
`window.opener` and on the `BroadcastChannel('nango-oauth-callback')` (an opener lost
to a cross-origin hop still hears the channel). It closes itself when acknowledged
(`{type: 'nango_oauth_callback_ack'}`) or, on success, after 500 ms; an error stays on
screen for the user to read. 200 on success, the error's status (400 by default)
otherwise.

The script is a constant, allowed by its hash in a strict Content-Security-Policy; the
result it sends travels in a JSON data block, every `<`, `>`, `&`, U+2028 and U+2029
escaped, so no value can end the block or become markup. The human-readable text is
HTML-escaped. The page cannot be framed or cached, and sends no referrer (its URL
holds the authorisation code).
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Final

import orjson
from aiohttp import web

SUCCESS_MESSAGE: Final = "nango_oauth_callback_success"
ERROR_MESSAGE: Final = "nango_oauth_callback_error"
ACK_MESSAGE: Final = "nango_oauth_callback_ack"
CHANNEL: Final = "nango-oauth-callback"
RESULT_ELEMENT: Final = "authgate-oauth-result"
SUCCESS_CLOSE_DELAY_MS: Final = 500

SCRIPT: Final = f"""
(function () {{
  var result = JSON.parse(document.getElementById("{RESULT_ELEMENT}").textContent);
  var message = result.ok
    ? {{ type: "{SUCCESS_MESSAGE}" }}
    : {{
        type: "{ERROR_MESSAGE}",
        payload: {{ message: result.message, errorType: result.errorType }}
      }};
  var channel = null;
  try {{ channel = new BroadcastChannel("{CHANNEL}"); }} catch (ignored) {{}}
  function finish() {{
    try {{ if (channel) {{ channel.close(); }} }} catch (ignored) {{}}
    window.close();
  }}
  function onMessage(event) {{
    if (event && event.data && event.data.type === "{ACK_MESSAGE}") {{ finish(); }}
  }}
  window.addEventListener("message", onMessage);
  if (channel) {{
    channel.onmessage = onMessage;
    channel.postMessage(message);
  }}
  if (window.opener) {{
    try {{ window.opener.postMessage(message, "*"); }} catch (ignored) {{}}
  }}
  if (result.ok) {{ setTimeout(finish, {SUCCESS_CLOSE_DELAY_MS}); }}
}})();
"""

STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1a1a1a;background:#fff}"
    "@media (prefers-color-scheme:dark){body{color:#eee;background:#141414}}"
    "code{font-size:.9em}"
)


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        f"script-src {_csp_hash(SCRIPT)}",
        f"style-src {_csp_hash(STYLE)}",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def script_json(value: object) -> str:
    """JSON safe inside a `<script>` element: nothing in it can close the element,
    open a comment, or end a JavaScript line."""
    text = orjson.dumps(value).decode("utf-8")
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def success_page() -> web.Response:
    body = _page(
        {"ok": True},
        title="Connected",
        paragraphs=["The account is connected. You can close this window."],
    )
    return _response(200, body)


def error_page(error_type: str, message: str, *, status: int = 400) -> web.Response:
    body = _page(
        {"ok": False, "errorType": error_type, "message": message},
        title="The connection failed",
        paragraphs=[message, f"Error type: {error_type}"],
    )
    return _response(status, body)


def notice_page(title: str, message: str) -> web.Response:
    """A page that reports nothing to any opener: not the end of a flow."""
    return _response(200, _document(title, [message, "You can close this window."]))


def _page(result: dict[str, object], *, title: str, paragraphs: list[str]) -> str:
    scripts = (
        f'<script type="application/json" id="{RESULT_ELEMENT}">{script_json(result)}</script>'
        f"<script>{SCRIPT}</script>"
    )
    return _document(title, paragraphs, scripts)


def _document(title: str, paragraphs: list[str], scripts: str = "") -> str:
    text = "".join(f"<p>{html.escape(paragraph)}</p>" for paragraph in paragraphs)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{text}</main>{scripts}</body></html>"
    )


def _response(status: int, body: str) -> web.Response:
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8", headers=HEADERS
    )
