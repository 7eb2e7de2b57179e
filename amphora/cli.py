"""The ``amphora`` command: serve a module's server, call a service, inspect its queues and dead letters, run a
private broker.

Every subcommand finds the broker as the Python API does (:func:`amphora.config.broker_parameters`):
``--url``, else ``$AMQP_URL``, else ``amqp://guest:guest@127.0.0.1:5672/``. Exit status: 0 on success,
1 when the service answered with an error, 2 when there was no answer (or a usage or connection error).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from inspect import signature
from typing import Any

import gevent
from gevent.event import Event

from . import __version__
from .amqp import Connection
from .amqp import open_connection as amqp_open_connection
from .amqp.errors import AMQPError, NotFound
from .asyncapi import asyncapi_document
from .client import AmqpRpcClient
from .config import ENVIRONMENT_VARIABLE, broker_parameters
from .dead_letters import DeadLetter, DeadLetterQueue
from .describe import DESCRIBE, format_description
from .exceptions import (
    AmphoraError,
    HandlerTimeout,
    RemoteException,
    Unroutable,
    WrongRequest,
    WrongResult,
)
from .fanout import AmqpRpcFanoutClient
from .health import start_health_endpoint
from .heap import tune_malloc
from .server import AmqpRpcServer
from .supervisor import Supervised, Supervisor, child_command, process_label, supervised
from .topology import ServiceTopology

log = logging.getLogger("amphora.cli")

EXIT_ERROR_REPLY = 1
"""The service answered with an error (the function raised or ran past its time limit, or it was refused)."""
EXIT_NO_ANSWER = 2
"""No answer: expired, timed out, unroutable, broker unreachable, or a usage error."""
EXIT_INTERRUPTED = 130
"""Ctrl-C while calling or inspecting (serve and broker stop gracefully and exit 0)."""
ERROR_REPLIES = (RemoteException, HandlerTimeout, WrongRequest, WrongResult)
CALL_REPLY_QUEUE_EXPIRES = 30.0
"""Seconds a one-shot call's reply queue outlives the command (the client's default is 10 minutes)."""
BROKER_CHECK_INTERVAL = 1.0
URL_HELP = f"broker URL (default: ${ENVIRONMENT_VARIABLE}, else amqp://guest:guest@127.0.0.1:5672/)"
MANAGEMENT_NOTE = (
    "note: AMQP 0-9-1 cannot list queues (that needs the management plugin): per-key request queues, fanout "
    "server queues and reply queues are shown only when named with --queue, --server or --reply-queue"
)


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


# --- serve --------------------------------------------------------------------------------------


def import_object(target: str) -> Any:
    """The object named by ``MODULE:OBJECT`` (OBJECT may be dotted), with the current directory importable."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise CliError(f"expected MODULE:OBJECT (e.g. myservice:server), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # the module exists but something it imports does not: show the traceback
        raise CliError(f"no module named {module_name!r} (looked in the current directory and sys.path)") from None
    for name in attribute.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise CliError(f"{module_name} has no {attribute!r}") from None
    return obj


def load_server(target: str, options: dict[str, Any]) -> AmqpRpcServer:
    """The server ``target`` names, or the one it returns when called with ``options`` as keywords.

    The URL and the concurrency are fixed when a server is constructed, so ``options`` can only go to a
    factory: for an already-built server they are an error.
    """
    obj = import_object(target)
    if isinstance(obj, AmqpRpcServer):
        if options:
            given = ", ".join(f"--{name}" for name in options)
            raise CliError(
                f"{given} cannot apply to {target}: it is a server built already, and a server's URL and "
                f"concurrency are fixed when it is built. Set ${ENVIRONMENT_VARIABLE} instead of --url, or name "
                "a function that builds the server and takes url=/concurrency="
            )
        return obj
    not_a_server = CliError(
        f"{target} is a {type(obj).__name__}: expected an AmqpRpcServer or a function returning one"
    )
    if not callable(obj):
        raise not_a_server
    try:
        signature(obj).bind(**options)
    except TypeError as exc:
        raise CliError(f"cannot call {target} with {', '.join(options) or 'no arguments'}: {exc}") from None
    except ValueError:  # a builtin without a signature: not a function of the user's that builds a server
        raise not_a_server from None
    server = obj(**options)
    if not isinstance(server, AmqpRpcServer):
        raise CliError(f"{target}() returned a {type(server).__name__}, not an AmqpRpcServer")
    return server


def on_stop_signals(handler: Callable[[], None]) -> None:
    """Run ``handler`` (in a greenlet of its own) on SIGINT (Ctrl-C) and SIGTERM."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, handler)


def serve_processes(args: argparse.Namespace) -> int:
    """``--processes N``: a supervisor of N children, each ``amphora serve`` with the same target and options."""
    if args.health_port is not None:
        raise CliError(
            "--health-port answers for one server process: with --processes, give each process its own "
            "container (or unit) and probe, or leave out --health-port"
        )
    arguments = ["serve", args.target, "--log-level", args.log_level]
    for name in ("url", "concurrency"):
        if getattr(args, name) is not None:
            arguments += [f"--{name}", str(getattr(args, name))]
    log.info("starting %d server process(es) of %s", args.processes, args.target)
    return Supervisor(lambda index: child_command(arguments), args.processes).run()


def on_ready(server: AmqpRpcServer, supervisor: Supervised | None) -> None:
    log.info("serving %s as %s; Ctrl-C or SIGTERM stops", server.service_name, server.name)
    if supervisor is not None:
        supervisor.ready()


def orphaned() -> None:
    """The supervisor is gone (killed): stop as on SIGTERM rather than serve unsupervised forever."""
    log.warning("the supervisor is gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then stop gracefully. The process is ours: its heap keeps what it frees."""
    if args.processes is not None:
        return serve_processes(args)
    tune_malloc()
    options = {name: getattr(args, name) for name in ("url", "concurrency") if getattr(args, name) is not None}
    server = load_server(args.target, options)
    supervisor = supervised(on_orphaned=orphaned)
    endpoint = None
    if args.health_port is not None:
        try:
            endpoint = start_health_endpoint(server, args.health_port, args.health_host)
        except OSError as exc:
            raise CliError(f"cannot listen on {args.health_host}:{args.health_port} for --health-port: {exc}") from None
    try:
        server.serve_forever(on_ready=lambda: on_ready(server, supervisor))
    finally:
        if endpoint is not None:
            endpoint.stop(timeout=1)
        if supervisor is not None:
            supervisor.close()
    log.info("stopped")
    return 0


# --- call ---------------------------------------------------------------------------------------


LOOKS_LIKE_JSON = re.compile(r"\s*([\[{\"]|-?\d|-?(NaN|Infinity)$)")
"""An argument starting like a JSON array, object, string or number must be valid JSON."""


class NonFiniteNumber(ValueError):
    """NaN or infinity: JSON has no such numbers, and the other side would get null or an error."""


def _refuse_constant(name: str) -> float:
    raise NonFiniteNumber(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(f"{text} is too large for a JSON number")
    return value


def strict_json(text: str) -> Any:
    """``json.loads`` refusing NaN, Infinity and numbers that overflow to them."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def parse_argument(text: str) -> Any:
    """A command-line argument as JSON, or as the plain string if it does not look like JSON at all.

    Something that starts like JSON but is not (``[1``, ``1e400``, ``NaN``) is refused rather than guessed.
    """
    try:
        return strict_json(text)
    except NonFiniteNumber as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    except ValueError as exc:
        if LOOKS_LIKE_JSON.match(text):
            raise argparse.ArgumentTypeError(
                f"{text!r} looks like JSON but is not ({exc}); to pass it as a string, quote it: '\"{text}\"'"
            ) from None
        return text


def _converted(text: str, convert: Callable[[str], Any], noun: str) -> Any:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None


def positive_float(text: str) -> float:
    """``--timeout``: a number of seconds above zero."""
    value: float = _converted(text, float, "a number")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def positive_int(text: str) -> int:
    """``--expect``, ``--concurrency``, ``--limit``: a whole number above zero."""
    value: int = _converted(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def process_count(text: str) -> int:
    """``--processes``: a whole number above zero, or ``auto`` for the machine's cores."""
    return (os.cpu_count() or 1) if text == "auto" else positive_int(text)


def parse_kwargs(text: str) -> dict[str, Any]:
    """``--kwargs``: a JSON object."""
    try:
        value = strict_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"name": "x"}\'')
    return value


def check_service(args: argparse.Namespace) -> None:
    """Refuse at once, creating nothing, a call that no server could answer (unless ``--wait``).

    Connecting first also makes an unreachable broker or wrong credentials fail now, with their reason. Then
    passive declares tell: the service's request exchange exists (someone served or called it), its
    default request queue exists only for a service that is not fanout, and a server consumes that queue.
    """
    connection = open_connection(args.url)
    try:
        if args.wait:
            return
        topology = ServiceTopology(args.service)
        fanout = args.fanout or args.gather
        if probe(connection, "exchange", topology.request_exchange)[0] == "missing":
            raise CliError(
                f"no service {args.service!r} on this broker: no server or client of it ever ran (is the name "
                "right?); give --wait to send the call anyway and wait for a server until --timeout"
            )
        status, waiting, consumers = probe(connection, "queue", topology.default_queue)
        if fanout and status == "exists":
            raise CliError(f"{args.service!r} is not a fanout service: call it without --fanout and --gather")
        if not fanout and status == "missing":
            raise CliError(f"{args.service!r} is a fanout service: call it with --fanout or --gather")
        if not fanout and args.routing_key is None and consumers == "0":
            raise CliError(
                f"no server of {args.service!r} is running ({waiting} request(s) wait in {topology.default_queue}); "
                "give --wait to send the call anyway and wait for a server until --timeout"
            )
    finally:
        connection.close()


def open_connection(url: str | None) -> Connection:
    """A connection to the broker chosen as :func:`~amphora.config.broker_parameters` chooses it."""
    (parameters,) = broker_parameters(url)
    return amqp_open_connection(parameters)


def gathered_json(replies: dict[str, Any]) -> dict[str, Any]:
    """``{server: result}`` with each exception as ``{"error": "ErrorType: args"}``."""
    return {server: {"error": describe(v)} if isinstance(v, BaseException) else v for server, v in replies.items()}


def call_once(client: AmqpRpcClient, args: argparse.Namespace) -> int:
    """Print the first reply (the only one, unless the service is a fanout service)."""
    options = {"routing_key": args.routing_key} if args.routing_key is not None else {}
    result = client.call(function_name=args.function, **options)(*args.args, **args.kwargs)
    print(json.dumps(result, ensure_ascii=False))
    return 0


def gather(client: AmqpRpcFanoutClient, args: argparse.Namespace) -> int:
    """Print every fanout server's reply as ``{server: result}``; exit status 1 if any of them failed."""
    caller = client.gather(timeout=args.timeout, expect=args.expect)
    replies = caller(function_name=args.function)(*args.args, **args.kwargs)
    if not replies:
        raise CliError(f"no fanout server of {args.service} replied within {args.timeout} s")
    print(json.dumps(gathered_json(replies), ensure_ascii=False))
    return EXIT_ERROR_REPLY if any(isinstance(v, BaseException) for v in replies.values()) else 0


def cmd_call(args: argparse.Namespace) -> int:
    """Call one function and print its result as JSON."""
    if args.expect is not None and not args.gather:
        raise CliError("--expect goes with --gather")
    check_service(args)
    options = {"timeout": args.timeout, "url": args.url, "reply_queue_expires": CALL_REPLY_QUEUE_EXPIRES}
    fanout = args.fanout or args.gather
    client = (AmqpRpcFanoutClient if fanout else AmqpRpcClient)(args.service, **options)
    try:
        if args.gather and isinstance(client, AmqpRpcFanoutClient):
            return gather(client, args)
        return call_once(client, args)
    except Unroutable:
        if not fanout:
            raise
        raise Unroutable(f"no fanout server of {args.service} is running") from None
    finally:
        client.stop()


# --- inspect ------------------------------------------------------------------------------------


def service_entities(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """``(role, kind, name)`` of each exchange and queue of the service to look at."""
    topology = ServiceTopology(args.service)
    return [
        ("request exchange", "exchange", topology.request_exchange),
        ("reply exchange", "exchange", topology.response_exchange),
        ("dead-letter exchange", "exchange", topology.dead_exchange),
        ("events exchange", "exchange", topology.events_exchange),
        ("default request queue", "queue", topology.default_queue),
        ("refused requests", "queue", topology.dead_queue),
        *((f"request queue {label!r}", "queue", topology.request_queue(label)) for label in args.queue),
        *((f"fanout queue of {name!r}", "queue", topology.fanout_queue(name)) for name in args.server),
        *(("reply queue", "queue", name) for name in args.reply_queue),
    ]


def probe(connection: Connection, kind: str, name: str) -> tuple[str, str, str]:
    """``(status, messages, consumers)`` of an exchange or queue, by a passive declare on a channel of its own."""
    channel = connection.channel()
    try:
        if kind == "exchange":
            channel.exchange_declare(name, passive=True)
            return "exists", "-", "-"
        declared = channel.queue_declare(name, passive=True)
        return "exists", str(declared.message_count), str(declared.consumer_count)
    except NotFound:
        return "missing", "-", "-"
    finally:
        channel.close()


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns, two spaces apart."""
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print what exists of the service on the broker, with message and consumer counts."""
    connection = open_connection(args.url)
    try:
        rows = [("ROLE", "KIND", "NAME", "STATUS", "MESSAGES", "CONSUMERS")]
        rows += [(role, kind, name, *probe(connection, kind, name)) for role, kind, name in service_entities(args)]
    finally:
        connection.close()
    print(format_table(rows))
    print(MANAGEMENT_NOTE, file=sys.stderr)
    return 0


# --- dead ---------------------------------------------------------------------------------------


def format_age(seconds: float | None) -> str:
    """``42s``, ``7m``, ``3h`` or ``2d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def cmd_dead(args: argparse.Namespace) -> int:
    """List a service's dead letters; requeue chosen ones; purge."""
    connection = open_connection(args.url)
    try:
        queue = DeadLetterQueue(connection, args.service)
        try:
            if args.purge:
                print(f"purged {queue.purge()} dead letter(s) of {args.service}")
                return 0
            messages = queue.read(args.limit)
            chosen = set(args.requeue)
            if chosen or args.requeue_all:
                again = [m for m in messages if args.requeue_all or m.properties.message_id in chosen]
                missing = chosen - {str(m.properties.message_id) for m in again}
                if missing:
                    raise CliError(f"no dead letter with id {', '.join(sorted(missing))} among the first {args.limit}")
                queue.requeue(again)
                print(f"requeued {len(again)} request(s) to {queue.topology.request_exchange}")
                return 0
            now = time.time()
            header = ["ID", "AGE", "FUNCTION", "CALLER", "REASON"] + (["ARGUMENTS"] if args.show_args else [])
            rows = [header]
            for message in messages:
                letter = DeadLetter.of(message, now)
                row = [letter.request_id, format_age(letter.age), letter.function, letter.caller, letter.reason]
                rows.append(row + ([letter.arguments] if args.show_args else []))
            print(format_table(rows))
            return 0
        finally:
            queue.close()  # what was read and not requeued goes back, in its place
    except NotFound:
        raise CliError(f"no dead-letter queue {ServiceTopology(args.service).dead_queue}: no server of "
                       f"{args.service!r} ever ran") from None  # fmt: skip
    finally:
        connection.close()


# --- describe and asyncapi ----------------------------------------------------------------------


def is_fanout(service: str, url: str | None) -> bool:
    """Whether ``service`` is a fanout service (it has no default request queue); CliError if unknown."""
    connection = open_connection(url)
    try:
        topology = ServiceTopology(service)
        if probe(connection, "exchange", topology.request_exchange)[0] == "missing":
            raise CliError(f"no service {service!r} on this broker: no server or client of it ever ran")
        return probe(connection, "queue", topology.default_queue)[0] == "missing"
    finally:
        connection.close()


def cmd_describe(args: argparse.Namespace) -> int:
    """Ask a server of the service for its description (``amphora.describe``) and print it."""
    client_class = AmqpRpcFanoutClient if is_fanout(args.service, args.url) else AmqpRpcClient
    options = {"timeout": args.timeout, "url": args.url, "reply_queue_expires": CALL_REPLY_QUEUE_EXPIRES}
    client = client_class(args.service, **options)
    try:
        description = client.call(function_name=DESCRIBE)()
    finally:
        client.stop()
    print(json.dumps(description, indent=2, ensure_ascii=False) if args.json else format_description(description))
    return 0


def cmd_asyncapi(args: argparse.Namespace) -> int:
    """Write the AsyncAPI 3.0 document of a module's server (nothing is sent to a broker)."""
    document = json.dumps(asyncapi_document(load_server(args.target, {}), broker_parameters(args.url)), indent=2)
    if args.output is None:
        print(document)
    else:
        with open(args.output, "w", encoding="utf-8") as output:
            output.write(document + "\n")
    return 0


# --- broker -------------------------------------------------------------------------------------


def cmd_broker(args: argparse.Namespace) -> int:
    """Run a private RabbitMQ node until SIGINT/SIGTERM, then stop it and delete its data."""
    # imported here, not at the top: amphora.testing imports pytest when it is installed
    from .testing import RabbitNode, RabbitNodeError

    stopping = Event()
    on_stop_signals(stopping.set)
    node = RabbitNode(port=args.port)
    try:
        log.info("starting RabbitMQ (data in %s)", node.directory)
        try:
            node.start()
        except RabbitNodeError as exc:
            raise CliError(str(exc)) from None
        print(node.url)
        print(f"export {ENVIRONMENT_VARIABLE}={node.url}", flush=True)
        log.info("RabbitMQ node %s is running; Ctrl-C or SIGTERM stops it", node.nodename)
        while not stopping.wait(BROKER_CHECK_INTERVAL):
            if not node.running:
                raise CliError(f"the RabbitMQ node exited; see {node.directory}/output.log")
        log.info("stopping RabbitMQ")
    finally:
        node.close()
    return 0


# --- the command line ---------------------------------------------------------------------------


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-level",
        type=str.upper,
        default=default,
        metavar="LEVEL",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help=f"what to log on stderr: DEBUG, INFO, WARNING, ERROR or CRITICAL (default: {default})",
    )


def add_subcommand(
    subparsers: Any, name: str, summary: str, epilog: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser


SERVE_EPILOG = f"""\
MODULE:OBJECT names either
  - an AmqpRpcServer (or AmqpRpcFanoutServer) built by the module: its URL and concurrency were fixed
    when it was built, so --url and --concurrency are refused (set ${ENVIRONMENT_VARIABLE} instead of --url);
  - or a function returning one: it is called with url=... and concurrency=... for the options given
    (and without them when they are not given), so it must accept those keywords.
The current directory is importable. On Ctrl-C or SIGTERM the server stops taking requests, finishes the
running ones and sends their replies (for at most the server's stop_timeout, 30 s by default), and the
command exits with status 0. The process keeps the memory it frees for reuse (amphora.tune_malloc), unless
MALLOC_*_ variables or GLIBC_TUNABLES set glibc's malloc.

With --processes N (auto: one per core), a supervisor runs N such processes (each re-runs this command
without --processes) and restarts any that dies, after a backoff. Process 0 starts first, the others once
it serves; if it cannot (bad target, import error), the command exits with status 2. Ctrl-C or SIGTERM
stops every process gracefully. Log lines say which process wrote them ([process 1/4 pid 1234]);
$AMPHORA_PROCESS holds INDEX/COUNT in each, e.g. to give each its own metrics port. Not with
--health-port (which answers for one process).

With --health-port, GET http://HOST:PORT/health answers 200 while the server serves (started, not
stopping, connected to the broker) and 503 otherwise: a liveness or readiness probe.

examples:
  amphora serve examples.math_server:server
  amphora serve examples.math_server:server --health-port 8080   # curl -f localhost:8080/health
  amphora serve examples.math_server:server --processes auto
  {ENVIRONMENT_VARIABLE}=amqp://guest:guest@rabbit:5672/ amphora serve myservice:server
  amphora serve myservice:make_server --url amqp://guest:guest@rabbit:5672/ --concurrency 10

  where myservice.py has:
    def make_server(url=None, concurrency=100):
        server = AmqpRpcServer("math", url=url, concurrency=concurrency)
        server.add_function(add)
        return server
"""

CALL_EPILOG = """\
Each ARG is parsed as JSON (42, 1.5, true, null, "[1, 2]", '{"a": 1}'); a word that is not JSON is
passed as a string (hello). An ARG that starts like JSON but is not ([1, 1e400, NaN, 12ab) is refused:
quote a string that looks like JSON or a number: '"42"'. The result is printed as JSON.

Before sending, the command checks (creating nothing) that the service exists on the broker, that a server
runs (unless --routing-key names a per-key queue), and that --fanout/--gather match the kind of service;
--wait skips these checks and waits for a server until --timeout.

exit status: 0 with the result on stdout; 1 when the function raised ("ErrorType: args" on stderr), ran
past its time limit, or the service refused the request (e.g. unknown function); 2 when no answer came (no
such service or no server running, no server took the call before --timeout, no queue for it, the broker
is unreachable) or on a usage error.

examples:
  amphora call math add 2 3                        # prints 5
  amphora call math greet Ada --kwargs '{"polite": true}'
  amphora call math slow_sum 1 2 --timeout 120
  amphora call math add 2 3 --wait --timeout 60    # even before a server starts
  amphora call jobs run 7 --routing-key gpu        # to the per-key queue bound with "gpu"
  amphora call workers status --fanout             # broadcast; the first reply
  amphora call workers status --gather --expect 3  # {"server name": result, ...}
"""

INSPECT_EPILOG = """\
Shows which of the service's exchanges and queues exist, and for queues how many messages wait (ready, not
yet taken) and how many consumers (servers or clients) read them. AMQP 0-9-1 cannot list queues without
the management plugin, so per-key request queues, fanout server queues and client reply queues are shown
only when you name them.

examples:
  amphora inspect math
  amphora inspect jobs --queue gpu --queue cpu
  amphora inspect workers --server host1.4242.ab12cd
  amphora inspect math --reply-queue rpc_replies_0f3c9a...   # a reply queue (a client's reply_queue)
"""

DEAD_EPILOG = """\
Servers dead-letter the requests they refuse (malformed, unknown function, too large...) to the queue
rpc_SERVICE_dead, which keeps the newest 10,000 (a server's dead_letter_limit). This lists them, oldest
first, with each one's request id, age, function, calling client and the reason it was refused; arguments
are shown only with --show-args (they may hold secrets). Listing takes nothing away: the messages read go
back to the queue in their place. --requeue publishes chosen requests to the service's request exchange
again, as new requests (id ID.requeued, no deadline: a server runs them, and their replies, if any, go
to a caller that has long given up), each removed from the dead letters once the broker has the copy.

examples:
  amphora dead math
  amphora dead math --show-args --limit 10
  amphora dead math --requeue 3f9c2a01b4e6d8a7c5e41 --requeue 3f9c2a01b4e6d8a7c5e42
  amphora dead math --requeue-all
  amphora dead math --purge
"""

DESCRIBE_EPILOG = """\
Calls the function amphora.describe, which every server answers: the service's functions with their
signatures and docstrings, and with --json their JSON Schemas too (see the protocol documentation).
Exit status 1 if the server refused (an amphora older than describe), 2 if there is no such service or no
server answered within --timeout.

examples:
  amphora describe math
  amphora describe math --json
"""

ASYNCAPI_EPILOG = """\
Imports the module, takes its server (or calls the function that returns it) without starting it, and
writes the service's AsyncAPI 3.0 document as JSON: the request and reply exchanges as channels, one
operation per function with its reply, the error reply and amphora's headers.

examples:
  amphora asyncapi examples.math_server:server -o math.asyncapi.json
"""

BROKER_EPILOG = f"""\
Starts RabbitMQ (rabbitmq-server must be installed) on a free port, or on --port, with its data in a
temporary directory, prints the node's URL and an export line for your shell, and runs until Ctrl-C or
SIGTERM, then stops the node and deletes its data. Nothing is shared with a RabbitMQ the machine already
runs (a --port in use is refused).

examples:
  amphora broker        # then paste its "export {ENVIRONMENT_VARIABLE}=..." line into other shells
  amphora broker --port 5672   # the port clients try by default: no export needed
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amphora",
        description="Reliable RPC over AMQP (RabbitMQ): serve, call and inspect amphora services.",
        epilog="Run 'amphora COMMAND --help' for the options and examples of each command.",
    )
    parser.add_argument("--version", action="version", version=f"amphora {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    serve = add_subcommand(
        subparsers, "serve", "Run an amphora server defined in a Python module.", SERVE_EPILOG, cmd_serve
    )
    serve.add_argument("target", metavar="MODULE:OBJECT", help="the server, or a function returning it")
    serve.add_argument("--url", help=f"{URL_HELP}; only for a function (see below)")
    serve.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="requests handled at once (default: the server's); only for a function",
    )
    serve.add_argument(
        "--processes",
        type=process_count,
        metavar="N",
        help="run N server processes (auto: one per core) under a supervisor that restarts any that dies",
    )
    serve.add_argument(
        "--health-port",
        type=int,
        metavar="PORT",
        help="answer GET /health on PORT: 200 while serving, 503 otherwise (for orchestrators' probes)",
    )
    serve.add_argument(
        "--health-host", default="0.0.0.0", metavar="HOST", help="address of --health-port (default: 0.0.0.0)"
    )
    add_log_level(serve, "INFO")

    call = add_subcommand(
        subparsers, "call", "Call a function of a service and print its result as JSON.", CALL_EPILOG, cmd_call
    )
    call.add_argument("service", help="the service name, as given to AmqpRpcServer")
    call.add_argument("function", help="the function name")
    call.add_argument(
        "args",
        nargs="*",
        default=[],  # with a default, argparse does not list the optional ARG among the missing arguments
        type=parse_argument,
        metavar="ARG",
        help="positional arguments, each JSON or a plain string",
    )
    call.add_argument(
        "--kwargs", type=parse_kwargs, default={}, metavar="JSON", help="keyword arguments, a JSON object"
    )
    call.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the reply (default: 30); a request still in its queue then expires there",
    )
    call.add_argument("--routing-key", metavar="KEY", help="send to the per-key request queue bound with KEY")
    call.add_argument("--fanout", action="store_true", help="broadcast to every server of a fanout service")
    call.add_argument(
        "--gather",
        action="store_true",
        help="broadcast, wait for every server's reply until --timeout, print {server: result}",
    )
    call.add_argument(
        "--expect", type=positive_int, metavar="N", help="with --gather: stop waiting once N servers replied"
    )
    call.add_argument(
        "--wait",
        action="store_true",
        help="send the call even if no server of the service runs (or the service is unknown): wait for one",
    )
    call.add_argument("--url", help=URL_HELP)
    add_log_level(call, "CRITICAL")

    inspect = add_subcommand(
        subparsers, "inspect", "Show a service's exchanges and queues on the broker.", INSPECT_EPILOG, cmd_inspect
    )
    inspect.add_argument("service", help="the service name")
    inspect.add_argument("--queue", action="append", default=[], metavar="LABEL", help="a per-key request queue")
    inspect.add_argument("--server", action="append", default=[], metavar="NAME", help="a fanout server's queue")
    inspect.add_argument(
        "--reply-queue", action="append", default=[], metavar="NAME", help="a reply queue (a client's reply_queue)"
    )
    inspect.add_argument("--url", help=URL_HELP)
    add_log_level(inspect, "CRITICAL")

    dead = add_subcommand(
        subparsers, "dead", "List, requeue or purge a service's refused requests.", DEAD_EPILOG, cmd_dead
    )
    dead.add_argument("service", help="the service name")
    dead.add_argument("--limit", type=positive_int, default=100, metavar="N", help="read at most N (default: 100)")
    dead.add_argument("--show-args", action="store_true", help="also show each request's arguments (may be secret)")
    action = dead.add_mutually_exclusive_group()
    action.add_argument(
        "--requeue", action="append", default=[], metavar="ID", help="send the request with this id again"
    )
    action.add_argument("--requeue-all", action="store_true", help="send every request read again")
    action.add_argument("--purge", action="store_true", help="delete every dead letter")
    dead.add_argument("--url", help=URL_HELP)
    add_log_level(dead, "CRITICAL")

    describe_command = add_subcommand(
        subparsers,
        "describe",
        "Print a service's functions, as its servers describe them.",
        DESCRIBE_EPILOG,
        cmd_describe,
    )
    describe_command.add_argument("service", help="the service name")
    describe_command.add_argument("--json", action="store_true", help="print the whole answer, with JSON Schemas")
    describe_command.add_argument(
        "--timeout", type=positive_float, default=10.0, metavar="S", help="seconds to wait (default: 10)"
    )
    describe_command.add_argument("--url", help=URL_HELP)
    add_log_level(describe_command, "CRITICAL")

    asyncapi = add_subcommand(
        subparsers, "asyncapi", "Write the AsyncAPI 3.0 document of a service.", ASYNCAPI_EPILOG, cmd_asyncapi
    )
    asyncapi.add_argument("target", metavar="MODULE:OBJECT", help="the server, or a function returning it")
    asyncapi.add_argument("-o", "--output", metavar="FILE", help="write it to FILE (default: standard output)")
    asyncapi.add_argument("--url", help=f"the broker the document names; {URL_HELP}")
    add_log_level(asyncapi, "WARNING")

    broker = add_subcommand(
        subparsers, "broker", "Run a private RabbitMQ node in the foreground.", BROKER_EPILOG, cmd_broker
    )
    add_log_level(broker, "INFO")
    broker.add_argument("--port", type=int, help="its AMQP port (default: a free one)")
    return parser


def describe(error: BaseException) -> str:
    """An error as one line: ``ErrorType: message`` (a remote error by its remote type)."""
    if isinstance(error, RemoteException):
        return str(error)
    return f"{type(error).__name__}: {error}"


def main(argv: list[str] | None = None) -> int:
    """Run the ``amphora`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run is cmd_serve:  # which process wrote the line: one of several, or their supervisor
        label = f"supervisor pid {os.getpid()}" if args.processes is not None else process_label()
        log_format = f"%(asctime)s %(levelname)s [{label}] %(name)s: %(message)s"
    else:
        log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level, format=log_format)
    try:
        return int(args.run(args))
    except ERROR_REPLIES as exc:
        print(describe(exc), file=sys.stderr)
        return EXIT_ERROR_REPLY
    except CliError as exc:
        print(f"amphora: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except (AmphoraError, AMQPError, TimeoutError) as exc:
        print(describe(exc), file=sys.stderr)
        return EXIT_NO_ANSWER
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
