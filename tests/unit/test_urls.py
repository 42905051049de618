"""Broker/backend URL parsing and password masking."""

from __future__ import annotations

import pytest

from celeriac.urls import URL, mask_url, parse_url, split_urls

# -- parse_url ----------------------------------------------------------------------------


def test_redis_password_only() -> None:
    assert parse_url("redis://:pw@host:6379/1") == URL(
        scheme="redis", password="pw", hostname="host", port=6379, path="1"
    )


def test_redis_user_and_password_no_port_no_db() -> None:
    url = parse_url("redis://user:pw@host")
    assert (url.username, url.password, url.hostname, url.port, url.path) == (
        "user",
        "pw",
        "host",
        None,
        None,
    )


def test_rediss_query_options() -> None:
    url = parse_url("rediss://:pw@host:6380/0?ssl_cert_reqs=required")
    assert url.scheme == "rediss"
    assert url.path == "0"
    assert url.query == {"ssl_cert_reqs": "required"}


def test_redis_unix_socket_keeps_absolute_path() -> None:
    url = parse_url("redis+socket:///tmp/r.sock?virtual_host=2")
    assert url.scheme == "redis+socket"
    assert url.hostname is None
    assert url.path == "/tmp/r.sock"
    assert url.query == {"virtual_host": "2"}


def test_sentinel_list_parses_first_url() -> None:
    url = parse_url("sentinel://h1:26379;sentinel://h2:26379")
    assert (url.scheme, url.hostname, url.port) == ("sentinel", "h1", 26379)


def test_sqlite_relative_and_absolute_paths() -> None:
    assert parse_url("sqlite:///rel/path.db").path == "rel/path.db"
    assert parse_url("sqlite:////abs/path.db").path == "/abs/path.db"
    url = parse_url("db+sqlite:///x.db")
    assert (url.scheme, url.hostname, url.path) == ("db+sqlite", None, "x.db")


def test_amqp_vhost_slash() -> None:
    url = parse_url("amqp://guest:guest@localhost:5672//")
    assert url == URL(
        scheme="amqp",
        username="guest",
        password="guest",
        hostname="localhost",
        port=5672,
        path="/",
    )
    assert parse_url("amqp://localhost:5672/myvhost").path == "myvhost"


def test_memory_has_no_parts() -> None:
    assert parse_url("memory://") == URL(scheme="memory")


def test_user_and_password_are_url_decoded() -> None:
    url = parse_url("redis://us%40er:p%40ss%3Aword@host/0")
    assert url.username == "us@er"
    assert url.password == "p@ss:word"


def test_postgresql_url() -> None:
    url = parse_url("db+postgresql://u:p@db.example.com:5432/results")
    assert (url.scheme, url.username, url.password, url.hostname, url.port, url.path) == (
        "db+postgresql",
        "u",
        "p",
        "db.example.com",
        5432,
        "results",
    )


def test_ipv6_host() -> None:
    url = parse_url("redis://[::1]:6379/0")
    assert (url.hostname, url.port) == ("::1", 6379)


@pytest.mark.parametrize("bad", ["", "localhost", "redis:/host", "redis://host:notaport"])
def test_not_a_url_raises_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_url(bad)


# -- split_urls ---------------------------------------------------------------------------


def test_split_urls() -> None:
    assert split_urls("sentinel://h1:26379; sentinel://h2:26379;") == [
        "sentinel://h1:26379",
        "sentinel://h2:26379",
    ]
    assert split_urls("redis://host") == ["redis://host"]


def test_split_urls_keeps_semicolon_inside_password() -> None:
    assert split_urls("redis://u:pa;ss@h1;redis://h2") == ["redis://u:pa;ss@h1", "redis://h2"]


# -- mask_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:332572@127.0.0.1:6379/1", "redis://:**@127.0.0.1:6379/1"),
        ("amqp://guest:guest@localhost:5672//", "amqp://guest:**@localhost:5672//"),
        ("db+postgresql://u:p@h/db", "db+postgresql://u:**@h/db"),
        (
            "rediss://:pw@host:6380/0?ssl_cert_reqs=required",
            "rediss://:**@host:6380/0?ssl_cert_reqs=required",
        ),
        # unescaped '@' and ';' in the password are hidden too
        ("redis://:p@ss;wd@host/0", "redis://:**@host/0"),
        # passwords given as options
        ("redis://host:6379/0?password=secret&db=1", "redis://host:6379/0?password=**&db=1"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://user@localhost",
        "memory://",
        "sqlite:///celeriac.db",
        "redis+socket:///tmp/r.sock",
        "redis://host:6379/0?x=a@b",
    ],
)
def test_mask_url_without_password_is_unchanged(url: str) -> None:
    assert mask_url(url) == url


def test_mask_url_failover_list() -> None:
    assert (
        mask_url("sentinel://:pw@h1:26379;sentinel://:pw@h2:26379/0")
        == "sentinel://:**@h1:26379;sentinel://:**@h2:26379/0"
    )
    assert mask_url("amqp://h1:5672;amqp://u:pw@h2//") == "amqp://h1:5672;amqp://u:**@h2//"


def test_mask_url_empty_and_none_as_given() -> None:
    assert mask_url("") == ""
    assert mask_url(None) is None


def test_mask_url_custom_mask() -> None:
    assert mask_url("redis://:pw@h/0", mask="********") == "redis://:********@h/0"


def test_mask_url_azure_account_key() -> None:
    url = "azureblockblob://DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SECRET;X=y"
    assert "SECRET" not in mask_url(url)
