"""Connection parameters and their AMQP URL form.

``amqp://user:password@host:port/vhost?heartbeat=30&connection_timeout=10`` and ``amqps://`` with the TLS
options ``cafile``, ``certfile``, ``keyfile``, ``verify=none`` and ``server_hostname``. ``memory://`` (or
``memory://name`` for a broker of its own) names an in-process broker (:mod:`amphora.memory`), for tests; of
the options it honours ``frame_max`` and ``channel_max``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import gevent.ssl

from .errors import InvalidURL

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
MEMORY_SCHEME = "memory"
DEFAULT_MEMORY_BROKER = "default"
"""The in-process broker that ``memory://`` names."""

_NUMBER_OPTIONS = {"heartbeat": int, "connection_timeout": float, "frame_max": int, "channel_max": int}
_TLS_OPTIONS = ("cafile", "certfile", "keyfile", "verify", "server_hostname")


@dataclass(frozen=True)
class ConnectionParameters:
    """Everything needed to open one connection to one broker."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str = "/"
    heartbeat: int = 30
    connection_timeout: float = 10.0
    frame_max: int = 131072
    channel_max: int = 2047
    tls: bool = False
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True
    server_hostname: str | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    memory: bool = False
    """An in-process broker (:mod:`amphora.memory`) named by ``host``, not a network one."""

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ConnectionParameters:
        """Parse an ``amqp://``, ``amqps://`` or ``memory://`` URL; keyword arguments override what it says."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"cannot parse AMQP URL {redact(url)!r}: {exc}") from None
        if parts.scheme == MEMORY_SCHEME:
            values: dict[str, Any] = {"host": parts.netloc or DEFAULT_MEMORY_BROKER, "memory": True}
        elif parts.scheme in ("amqp", "amqps"):
            values = _network_values(parts, port)
        else:
            raise InvalidURL(f"AMQP URL must start with amqp://, amqps:// or memory://, got {redact(url)!r}")
        for name, raw in parse_qsl(parts.query, keep_blank_values=True):
            values[name] = _option_value(name, raw, url)
        values.update(overrides)
        return cls(**values)

    def with_options(self, **changes: Any) -> ConnectionParameters:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def url(self) -> str:
        """The URL of these parameters, password hidden (safe for logs and errors)."""
        if self.memory:
            return f"{MEMORY_SCHEME}://{self.host}"
        scheme = "amqps" if self.tls else "amqp"
        vhost = self.vhost.replace("%", "%25").replace("/", "%2F")
        return f"{scheme}://{self.user}:***@{self.host}:{self.port}/{vhost}"

    def make_ssl_context(self) -> ssl.SSLContext:
        """The TLS context to wrap the socket with: the one given, else one built from the options.

        A context given as ``ssl_context`` must be a :class:`gevent.ssl.SSLContext` (or the process must be
        monkey-patched) so that the TLS socket cooperates with other greenlets; note that
        ``gevent.ssl.create_default_context()`` returns a blocking standard library context.
        """
        if self.ssl_context is not None:
            return self.ssl_context
        # Not create_default_context(): even gevent.ssl's makes a stdlib context, whose sockets block the hub.
        context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and host name
        if self.cafile:
            context.load_verify_locations(cafile=self.cafile)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context


def _network_values(parts: SplitResult, port: int | None) -> dict[str, Any]:
    """Host, port, TLS, credentials and virtual host of an ``amqp://`` or ``amqps://`` URL."""
    tls = parts.scheme == "amqps"
    values: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        "tls": tls,
    }
    if parts.username is not None:
        values["user"] = unquote(parts.username)
    if parts.password is not None:
        values["password"] = unquote(parts.password)
    if parts.path not in ("", "/"):
        values["vhost"] = unquote(parts.path[1:])
    return values


def _option_value(name: str, raw: str, url: str) -> Any:
    if name in _NUMBER_OPTIONS:
        try:
            return _NUMBER_OPTIONS[name](raw)
        except ValueError:
            raise InvalidURL(f"option {name}={raw!r} in {redact(url)!r} is not a number") from None
    if name == "verify":
        if raw not in ("none", "required"):
            raise InvalidURL(f"option verify must be 'none' or 'required', got {raw!r}")
        return raw == "required"
    if name in _TLS_OPTIONS:
        return raw
    raise InvalidURL(f"unknown option {name!r} in AMQP URL {redact(url)!r}")


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
