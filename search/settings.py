"""The one home of a run's URIs: each normalised and checked once, credentials moved out.

MLflow and `requests` normalise what they are given (a scheme in capitals, a leading space), so a
rule that compares raw strings can be walked around; every rule here compares the normalised form
(`normalize_uri`), and every route a URI takes into the tool (a flag, the environment, a sweep
file, a run folder) passes through it.
"""

from __future__ import annotations

import os
import re
import urllib.parse

from core.errors import UserError

# What MLflow's own stores accept (a scheme-less value is a local path: MLflow's file store).
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
REMOTE_TRACKING_SCHEMES = ("http", "https", "postgresql", "mysql", "mssql", "databricks")
MAX_URI_CHARS = 4096  # longer is not a URI someone typed: refused before it reaches a client

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 (the variable's name)


def normalize_uri(uri: str, where: str, schemes: tuple[str, ...] = TRACKING_SCHEMES) -> str:
    """`uri` stripped, its scheme lower-cased, checked to be one of `schemes` and to parse
    (host, port); a `UserError` naming `where` otherwise."""
    text = uri.strip()
    if not text:
        raise UserError(f"{where}: is blank; give a URI such as {schemes[0]}:///path or leave it unset")
    if len(text) > MAX_URI_CHARS or any(ord(c) < 32 for c in text):
        raise UserError(f"{where}: not a URI (over {MAX_URI_CHARS} characters, or a control character)")
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port, parts.hostname  # a bad port or IPv6 literal raises here, not in MLflow's client
    except ValueError as err:
        raise UserError(f"{where}: {_shown(text)}: {err}") from None
    scheme = parts.scheme.lower()
    if scheme and scheme not in schemes:
        raise UserError(f"{where}: {_shown(text)}: unknown scheme {parts.scheme!r}; expected one of "
                        f"{', '.join(s + '://' for s in schemes)} or a local path")
    return scheme + text[len(scheme):]  # not urlunsplit: it turns sqlite://// into sqlite:///


def _shown(text: str) -> str:
    """`text` for a message: whatever stands before an `@` in its authority (user, password) as `***`."""
    return re.sub(r"//[^/@]*@", "//***@", text)


def uri_scheme(uri: str) -> str:
    """The scheme of a URI as MLflow and requests read it: spaces stripped, lower-cased ('' for a path)."""
    try:
        return urllib.parse.urlsplit(uri.strip()).scheme.lower()
    except ValueError:
        return ""


def is_http(uri: str) -> bool:
    """Whether a tracking URI names an MLflow server (HTTP or HTTPS)."""
    return uri_scheme(uri) in ("http", "https")


def sqlite_path(uri: str) -> str | None:
    """The file of an SQLite store's URI (`sqlite:///path`), else None."""
    text = uri.strip()
    return text[len("sqlite:///"):] if uri_scheme(text) == "sqlite" and text[6:10] == ":///" else None


def is_remote_store(uri: str) -> bool:
    """Whether a (normalised) tracking URI names a server, which would receive the user's credentials."""
    return uri_scheme(uri) in REMOTE_TRACKING_SCHEMES


def without_credentials(uri: str | None, where: str = "--tracking-uri") -> str | None:
    """A tracking URI, normalised, without its `user:password@`. The credentials move to MLflow's own
    variables (`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`) for this process, so no saved
    file, MLflow record or printed line holds them; `--resume` then needs them again (in the URI or
    those variables)."""
    if uri is None:
        return None
    uri = normalize_uri(uri, where)
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc or parts.username is None:
        return uri
    os.environ[USERNAME_ENV] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        os.environ[PASSWORD_ENV] = urllib.parse.unquote(parts.password)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def store_from_folder(named: str | None, where: str, own_store: str) -> str:
    """The tracking store a run folder's files name, as data: normalised, and only ever the store
    beside the folder (`own_store`). A folder never chooses a server (it would receive this user's
    credentials) nor a database elsewhere on this machine: those are refused with the flag that
    chooses them."""
    if not named:
        return own_store
    store = normalize_uri(named, where)
    if store != own_store:
        kind = "server" if is_remote_store(store) else "store"
        raise UserError(f"{where} names the tracking {kind} {store}; a run folder never chooses where records go: "
                        f"replay there only by naming it yourself: --tracking-uri {store}")
    return store
