"""Broker and result backend URLs: parse them the way kombu does, and hide their passwords.

Pure functions, no I/O. The forms in use:

- ``redis://:password@host:6379/1``, ``rediss://host?ssl_cert_reqs=required``
- ``redis+socket:///tmp/redis.sock?virtual_host=2`` (a Unix socket: the path stays absolute)
- ``sentinel://h1:26379;sentinel://h2:26379`` (a ';' list: see `split_urls`)
- ``amqp://guest:guest@localhost:5672//`` (the path is the vhost, here '/')
- ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``db+postgresql://u:p@host/db``
- ``memory://``
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import overload
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["URL", "mask_url", "parse_url", "split_urls"]

# A ';' starts the next URL of a failover list only when a scheme follows it, so a password
# that contains ';' is not cut in two.
_URL_SEPARATOR = re.compile(r";\s*(?=[A-Za-z][A-Za-z0-9+.\-]*://)")

# scheme://user:password@ -- the password runs to the last '@' before the path or query, so an
# unescaped '@' or ';' inside it is still hidden (failing closed: better to hide too much).
_USERINFO_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@;]*:)(?P<password>[^/?#]+)@"
)

# Passwords given as options: '?password=...' (redis-py) and Azure's 'AccountKey=...'.
_OPTION_PASSWORD = re.compile(
    r"(?P<head>(?:^|[?&;])(?:password|accountkey)=)(?P<password>[^&;#]*)", re.IGNORECASE
)

# Schemes whose path is a file system path to a Unix socket: kombu keeps it absolute.
_SOCKET_SCHEMES = ("socket", "unix", "redis+socket", "rediss+socket")


@dataclass(frozen=True)
class URL:
    """A broker or backend URL split into parts, as kombu's `url_to_parts` does.

    Attributes:
        scheme: Everything before '://', e.g. 'redis', 'rediss', 'db+postgresql'.
        username: URL-decoded user name, or None.
        password: URL-decoded password, or None.
        hostname: Host name (lowercased, IPv6 without brackets), or None.
        port: Port number, or None.
        path: The path without its leading '/' (so 'sqlite:////abs.db' gives '/abs.db' and
            'amqp://host//' gives the vhost '/'), URL-decoded, or None when empty. For
            Unix socket schemes the path is kept absolute.
        query: Query string options, e.g. {'ssl_cert_reqs': 'required'}.
    """

    scheme: str
    username: str | None = None
    password: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: str | None = None
    query: dict[str, str] = field(default_factory=dict)


def split_urls(value: str) -> list[str]:
    """Split a ';'-separated failover list into its URLs.

    Args:
        value: One URL or several joined by ';', e.g. 'sentinel://h1:26379;sentinel://h2:26379'.

    Returns:
        The URLs in order, stripped of surrounding spaces and stray ';'; empty parts dropped.
    """
    parts = (part.strip("; \t\r\n") for part in _URL_SEPARATOR.split(value))
    return [part for part in parts if part]


def parse_url(url: str) -> URL:
    """Split a URL into its parts.

    Args:
        url: A URL such as 'redis://:secret@localhost:6379/1'. For a ';' failover list the
            first URL is parsed (`split_urls` gives them all).

    Returns:
        The parsed `URL`.

    Raises:
        ValueError: `url` has no '://', or its port is not a number from 0 to 65535.
    """
    first = split_urls(url)[0] if url else ""
    scheme, sep, rest = first.partition("://")
    if not sep or not scheme:
        raise ValueError(f"Not a URL (expected 'scheme://...'): {url!r}")
    # Parse the rest with HTTP semantics, as kombu does, so every scheme splits the same way.
    # urlsplit (not urlparse) keeps ';' inside the path instead of taking it as parameters.
    parts = urlsplit("http://" + rest)
    path = parts.path
    if scheme.lower() not in _SOCKET_SCHEMES and path.startswith("/"):
        path = path[1:]
    return URL(
        scheme=scheme,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        hostname=unquote(parts.hostname) if parts.hostname else None,
        port=parts.port,
        path=unquote(path) if path else None,
        query=dict(parse_qsl(parts.query)),
    )


@overload
def mask_url(url: str, mask: str = ...) -> str: ...
@overload
def mask_url(url: None, mask: str = ...) -> None: ...


def mask_url(url: str | None, mask: str = "**") -> str | None:
    """Hide the passwords in a URL (or a ';' list of URLs) so it can be logged.

    Args:
        url: A URL such as 'amqp://guest:guest@localhost:5672//'; '' and None are returned as is.
        mask: What to show instead of each password.

    Returns:
        The URL with each password replaced by `mask`, e.g. 'amqp://guest:**@localhost:5672//'.
        A URL without a password comes back unchanged.
    """
    if not url:
        return url
    masked = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}{mask}@", url)
    return _OPTION_PASSWORD.sub(lambda m: f"{m['head']}{mask}", masked)
