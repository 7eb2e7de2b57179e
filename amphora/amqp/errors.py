"""Typed errors of the AMQP layer, built from AMQP reply codes where the broker gives one."""

from __future__ import annotations

from typing import Any


class AMQPError(Exception):
    """Base of every error raised by :mod:`amphora.amqp`."""


class InvalidURL(AMQPError, ValueError):
    """An AMQP URL or connection option that cannot be used."""


# --- connection level ---------------------------------------------------------------------------


class ConnectionError(AMQPError):
    """The connection could not be opened, or it is gone."""


class BrokerUnreachable(ConnectionError):
    """Nothing answered at the broker's address (refused, unknown host, no route)."""


class ConnectionTimeout(ConnectionError):
    """The broker did not complete the connection handshake within the connection timeout."""


class AuthenticationError(ConnectionError):
    """The broker refused the user name or password."""


class VhostNotAllowed(ConnectionError):
    """The virtual host does not exist, or the user has no permission on it."""


class TLSError(ConnectionError):
    """The TLS handshake failed (certificate not trusted, wrong host name, no TLS listener...)."""


class ProtocolError(ConnectionError):
    """The peer sent bytes that are not valid AMQP 0-9-1 framing."""


class ConnectionLost(ConnectionError):
    """The socket died or the broker stopped answering (missed heartbeats)."""


class ConnectionClosed(ConnectionError):
    """The connection was closed, by the broker (with its reply code) or by us."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text

    def __str__(self) -> str:
        return f"connection closed ({self.code}): {self.text}"


# --- channel level -----------------------------------------------------------------------------


class ChannelLimitReached(AMQPError):
    """Every channel number the connection allows (its negotiated ``channel_max``) is in use. The connection
    is fine: a channel can be opened once another closes."""


class ChannelClosed(AMQPError):
    """The channel was closed; by the broker this carries its reply code and text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text

    def __str__(self) -> str:
        return f"channel closed ({self.code}): {self.text}"


class AccessRefused(ChannelClosed):
    """403: the user may not use this resource."""


class NotFound(ChannelClosed):
    """404: the exchange or queue does not exist."""


class ResourceLocked(ChannelClosed):
    """405: the queue is exclusive to another connection."""


class PreconditionFailed(ChannelClosed):
    """406: the resource exists with other arguments, or an ack names an unknown delivery tag."""


# --- publishing --------------------------------------------------------------------------------


class PublishError(AMQPError):
    """A published message was not accepted by the broker."""


class MessageNacked(PublishError):
    """The broker nacked the message: it took no responsibility for it."""


class MessageReturned(PublishError):
    """A mandatory message could not be routed to any queue and came back."""

    def __init__(self, reply_code: int, reply_text: str, message: Any) -> None:
        super().__init__(reply_code, reply_text)
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.message = message

    def __str__(self) -> str:
        return f"message returned ({self.reply_code}): {self.reply_text}"


_CHANNEL_ERRORS: dict[int, type[ChannelClosed]] = {
    403: AccessRefused,
    404: NotFound,
    405: ResourceLocked,
    406: PreconditionFailed,
}


def channel_error(code: int, text: str) -> ChannelClosed:
    """The typed channel error for a Channel.Close reply code."""
    return _CHANNEL_ERRORS.get(code, ChannelClosed)(code, text)


def connection_error(code: int, text: str) -> ConnectionError:
    """The typed error for a Connection.Close reply code."""
    if code == 403:
        return AuthenticationError(f"access refused ({code}): {text}")
    if code == 530:
        return VhostNotAllowed(f"not allowed ({code}): {text}")
    return ConnectionClosed(code, text)
