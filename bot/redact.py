"""Secrets out of what is stored or shown: passwords in URLs (a PostgreSQL journal's
``storage.url``), secret query parameters, and values under secret-looking keys, in the
journal's copy of a config, in messages, logs and every answer of the API.

A leaf: the standard library only (storage and the API use it alike).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"
#: Query parameters of a URL that carry a secret (libpq's ``password``, ``sslpassword``...).
_SECRET_PARAM = re.compile(r"pass|secret|token|key", re.IGNORECASE)
#: A URL inside free text (an error message quoting one): up to whitespace or a quote.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]+")
#: A key whose value is a credential: password, secret, token, api key, private key, alert URLs...
_SECRET_KEY = re.compile(r"(?:^|[_\-.])(?:password|passwd|pwd|secret|token|api[_\-]?key|apikey|private[_\-]?key|"
                         r"credentials?|alert[_\-]?urls?)(?:$|[_\-.])", re.IGNORECASE)


def hide_password(url: str) -> str:
    """``url`` with the password of its user part and any secret query parameter as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparseable (a bad port, a stray bracket): mask what looks like user:password@
        return re.sub(r"(://[^/@:]*:)[^@]*@", rf"\1{MASK}@", url)
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}" if at and ":" in user else parts.netloc
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and not any(_SECRET_PARAM.search(k) for k, _ in pairs):
        return url
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def mask_text(text: str) -> str:
    """``text`` with :func:`hide_password` applied to every URL in it."""
    return _URL.sub(lambda m: hide_password(m.group(0)), text) if "://" in text else text


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def mask(obj: Any) -> Any:
    """A copy of a JSON-like value with every secret masked: values under secret-looking keys,
    passwords and secret parameters of every URL in its strings."""
    if isinstance(obj, str):
        return mask_text(obj)
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) and obj[k] not in (None, "", [], {})
                    else mask(v)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask(v) for v in obj]
    return obj
