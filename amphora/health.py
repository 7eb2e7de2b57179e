"""A health endpoint for orchestrators: ``GET /health`` answers 200 while a server serves, 503 otherwise.

``amphora serve --health-port N`` starts it beside the server (a Kubernetes ``httpGet`` probe, a load
balancer's check, or ``curl -f``). It reports :attr:`AmqpRpcServer.serving
<amphora.AmqpRpcServer.serving>`: started, not stopping, and connected to the broker on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gevent.pywsgi import WSGIServer

from .server import AmqpRpcServer

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def health_app(server: AmqpRpcServer) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application of the endpoint: one resource, ``/health``."""

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/health":
            status, text = "404 Not Found", "GET /health\n"
        elif server.serving:
            status, text = "200 OK", f"serving {server.service_name} as {server.name}\n"
        else:
            status, text = (
                "503 Service Unavailable",
                (f"not serving {server.service_name}: not started yet, stopping, or not connected to the broker\n"),
            )
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
        return [text.encode()]

    return application


def start_health_endpoint(server: AmqpRpcServer, port: int, host: str = "0.0.0.0") -> WSGIServer:
    """Serve :func:`health_app` on ``host:port`` in the background; ``stop()`` the result to end it."""
    endpoint = WSGIServer((host, port), health_app(server), log=None, error_log=None)
    endpoint.start()
    return endpoint
