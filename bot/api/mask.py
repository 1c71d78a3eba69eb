"""Secrets never leave the API: passwords in URLs and values under secret-looking keys are masked.

The run config journaled with every run holds ``storage.url``, which may carry a database
password; anything else that ever holds a credential (an error text quoting a URL, a plugin's
``api_key`` parameter) is caught by the same two rules. Every JSON answer and the report page
pass through here.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
#: ``scheme://user:password@host``: the password part (up to the ``@``).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#\"'<>]*:)[^\s/@?#\"'<>]+@")
#: A key whose value is a credential: password, secret, token, api key, private key, alert URLs...
_SECRET_KEY = re.compile(r"(?:^|[_\-.])(?:password|passwd|pwd|secret|token|api[_\-]?key|apikey|private[_\-]?key|"
                         r"credentials?|alert[_\-]?urls?)(?:$|[_\-.])", re.IGNORECASE)


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text) if "://" in text else text


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def mask(obj: Any) -> Any:
    """A copy of a JSON-ready value with every secret masked (values under secret keys, URL passwords)."""
    if isinstance(obj, str):
        return mask_text(obj)
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) and obj[k] not in (None, "", [], {})
                    else mask(v)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask(v) for v in obj]
    return obj
