"""AMQP 0-9-1 over gevent sockets, on pamqp's frame codec. It knows nothing of RPC.

See ``API.md`` beside this file for the contract the rest of amphora builds on.
"""

from . import errors
from .channel import Channel, DeclareOk
from .connection import Connection, connect, open_connection
from .message import Confirmation, Message, Properties
from .parameters import ConnectionParameters

__all__ = [
    "Channel",
    "Confirmation",
    "Connection",
    "ConnectionParameters",
    "DeclareOk",
    "Message",
    "Properties",
    "connect",
    "errors",
    "open_connection",
]
