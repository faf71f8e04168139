"""Passwords in URLs (an Optuna database, a tracking server): used to connect, never written or shown."""

from __future__ import annotations

import urllib.parse

REDACTED = "***"


def redact_uri(uri: str) -> str:
    """The URI with any password in it replaced by `***`, for messages and saved files."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.password:
        return uri
    netloc = f"{parts.username}:{REDACTED}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def is_redacted(uri: str | None) -> bool:
    """Whether `uri` is one `redact_uri` took a password out of."""
    return bool(uri) and urllib.parse.urlsplit(uri).password == REDACTED


def uri_scheme(uri: str) -> str:
    """The scheme of a URI as MLflow, requests and pyarrow read it: spaces stripped, lower-cased ('' for a path)."""
    try:
        return urllib.parse.urlsplit(uri.strip()).scheme.lower()
    except ValueError:
        return ""
