"""What is never shown: the password of a URI (user:***@host) and the values of
secret-looking keys (password, token, api_key...), in consoles, run folders, params,
tags and logged models alike."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEY = re.compile(r"(password|passwd|token(?!i[sz]e)|secret|api[_-]?key|access[_-]?key|credential)", re.IGNORECASE)
MASK = "***"


def redact_uri(uri: str) -> str:
    """The URI with the password of its user part masked: http://ana:***@host:5000."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]+):[^@/]*@", rf"\1:{MASK}@", str(uri), flags=re.IGNORECASE)


def mask_override(override: str) -> str:
    """``+api_key=S`` -> ``+api_key=***``: an override whose key looks like a secret."""
    key, sep, value = override.partition("=")
    if sep and SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return f"{key}={MASK}"
    return f"{key}={redact_uri(value)}" if sep and "://" in value else override  # user:password@host -> user:***@host


def mask_secrets(value: Any) -> Any:
    """Replace the values of secret-looking keys, and the password of a URI (user:***@host), at any depth."""
    if isinstance(value, dict):
        return {k: MASK if SECRET_KEY.search(str(k)) else mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return redact_uri(value) if isinstance(value, str) and "://" in value else value


def has_password(uri: str) -> bool:
    return redact_uri(uri) != str(uri)
