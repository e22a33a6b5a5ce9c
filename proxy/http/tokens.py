"""The one piece of HTTP grammar both the server and the client check by hand."""

from __future__ import annotations

import re

# RFC 9110 §5.6.2: a header field name or a method is a token.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
