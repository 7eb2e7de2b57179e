"""amphora: reliable RPC for gevent over AMQP 0-9-1 (RabbitMQ)."""

from .client import AmqpRpcClient
from .exceptions import (
    BrokerUnavailable,
    HandlerTimeout,
    IgnoreRequest,
    NoResult,
    OutboxFull,
    RemoteException,
    ReplyQueueLost,
    RequestExpired,
    RequestMayHaveRun,
    Unroutable,
    WrongRequest,
    WrongResult,
)
from .fanout import AmqpRpcFanoutClient, AmqpRpcFanoutServer
from .functions import RequestContext
from .heap import tune_malloc
from .parallel import parallel
from .protocol import JsonSerializer, MsgpackSerializer, RpcJsonSerializer
from .server import AmqpRpcServer
from .typed import typed

__version__ = "0.5.0"

__all__ = [
    "AmqpRpcClient",
    "AmqpRpcFanoutClient",
    "AmqpRpcFanoutServer",
    "AmqpRpcServer",
    "BrokerUnavailable",
    "HandlerTimeout",
    "IgnoreRequest",
    "JsonSerializer",
    "MsgpackSerializer",
    "NoResult",
    "OutboxFull",
    "RemoteException",
    "ReplyQueueLost",
    "RequestContext",
    "RequestExpired",
    "RequestMayHaveRun",
    "RpcJsonSerializer",
    "Unroutable",
    "WrongRequest",
    "WrongResult",
    "parallel",
    "tune_malloc",
    "typed",
]
