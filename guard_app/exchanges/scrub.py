"""Credentials never leave the broker inside exchange text (issue 10).

Exchanges echo parts of a request in their error messages; Bybit answers a bad
signature with ``10004 error sign! origin_string[<timestamp><API key>...]``. Every
text that came from an exchange passes through :func:`scrub` with the account's own
credentials before it becomes an error reason, a log line or a journal entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

HIDDEN = "[hidden]"

# Echoed request material, on any exchange: the signed string Bybit repeats, and the
# query string of a signed URL (it carries the signature and sometimes the key).
ECHOES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"origin_string\[[^\]]*\]?", re.IGNORECASE), "origin_string[...]"),
    (re.compile(r"\?\S*"), ""),
)


def scrub(text: str, secrets: Iterable[str | None], echoes: Iterable[tuple[re.Pattern[str], str]] = ()) -> str:
    """``text`` without any of ``secrets`` (plain or URL-encoded) or echoed request material.

    ``echoes``: an exchange's own (pattern, replacement) pairs on top of :data:`ECHOES`.
    """
    for pattern, replacement in (*ECHOES, *echoes):
        text = pattern.sub(replacement, text)
    variants = set()
    for secret in secrets:
        if secret and len(secret) >= 4:  # shorter strings would blank out ordinary words
            variants.update({secret, quote(secret, safe=""), quote_plus(secret)})
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, HIDDEN)
    return text
