"""Secrets out of text that is stored or shown: the password of a URL (a PostgreSQL journal's
``storage.url``), in the journal's copy of a config, in messages and in logs."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

#: Query parameters of a URL that carry a secret (libpq's ``password``, ``sslpassword``...).
_SECRET_PARAM = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def hide_password(url: str) -> str:
    """``url`` with the password of its user part and any secret query parameter as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparseable (a bad port, a stray bracket): mask what looks like user:password@
        return re.sub(r"(://[^/@:]*:)[^@]*@", r"\1***@", url)
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':', 1)[0]}:***@{host}" if at and ":" in user else parts.netloc
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and not any(_SECRET_PARAM.search(k) for k, _ in pairs):
        return url
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def redact_urls(value: Any) -> Any:
    """``value`` (a JSON-like tree) with :func:`hide_password` applied to every URL string in it."""
    if isinstance(value, dict):
        return {k: redact_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_urls(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return hide_password(value)
    return value
