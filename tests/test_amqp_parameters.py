"""URL parsing of connection parameters (pure logic, no broker)."""

import pytest

from amphora.amqp import ConnectionParameters
from amphora.amqp.errors import InvalidURL
from amphora.amqp.parameters import redact


def test_full_url_is_parsed():
    params = ConnectionParameters.from_url(
        "amqp://alice:s%40cret@broker.example:5673/my%2Fvhost?heartbeat=7&connection_timeout=2.5&frame_max=8192"
    )
    assert (params.host, params.port, params.user, params.password) == ("broker.example", 5673, "alice", "s@cret")
    assert params.vhost == "my/vhost"
    assert (params.heartbeat, params.connection_timeout, params.frame_max) == (7, 2.5, 8192)
    assert not params.tls


@pytest.mark.parametrize(
    "url, vhost", [("amqp://h", "/"), ("amqp://h/", "/"), ("amqp://h/%2F", "/"), ("amqp://h/prod", "prod")]
)
def test_vhost_defaults_to_slash(url, vhost):
    assert ConnectionParameters.from_url(url).vhost == vhost


def test_amqps_defaults_to_tls_port_and_verification():
    params = ConnectionParameters.from_url("amqps://h?cafile=/ca.pem&server_hostname=rabbit")
    assert params.tls and params.port == 5671 and params.verify
    assert params.cafile == "/ca.pem" and params.server_hostname == "rabbit"
    assert not ConnectionParameters.from_url("amqps://h?verify=none").verify


def test_keyword_overrides_win():
    assert ConnectionParameters.from_url("amqp://h?heartbeat=5", heartbeat=0).heartbeat == 0


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://h", "amqp://"),
        ("amqp://h:notaport", "cannot parse"),
        ("amqp://h?heartbeat=soon", "not a number"),
        ("amqp://h?colour=blue", "unknown option 'colour'"),
        ("amqp://h?verify=maybe", "verify"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, message):
    with pytest.raises(InvalidURL, match=message):
        ConnectionParameters.from_url(url)


def test_password_never_shown():
    url = "amqp://bob:hunter2@h:5672/%2F"
    params = ConnectionParameters.from_url(url)
    assert "hunter2" not in repr(params)
    assert "hunter2" not in params.url
    assert "hunter2" not in redact(url)
    with pytest.raises(InvalidURL) as info:
        ConnectionParameters.from_url(url + "?bogus=1")
    assert "hunter2" not in str(info.value)
