"""RabbitCluster: private RabbitMQ nodes joined into one cluster."""

from __future__ import annotations

import json
import os
import pwd
import uuid
from typing import Self

import gevent
import gevent.socket

from .node import RabbitNode, RabbitNodeError


class _ClusterNode(RabbitNode):
    """A :class:`RabbitNode` whose Erlang cookie is ``.erlang.cookie`` in its own directory, as given.

    Nodes of one cluster (and ``rabbitmqctl`` talking to them) must share a cookie. A plain node run as root
    gets the ``rabbitmq`` user's home (and cookie) from ``runuser``, and otherwise generates a cookie of its
    own: a cluster node writes the cluster's cookie into its directory and is started with ``HOME`` there.
    """

    def __init__(self, name: str, cookie: str) -> None:
        super().__init__(name)
        path = self._path(".erlang.cookie")
        with open(path, "w") as cookie_file:
            cookie_file.write(cookie)
        os.chmod(path, 0o400)  # Erlang refuses a cookie file others may read
        if self._as_rabbitmq_user:
            user = pwd.getpwnam("rabbitmq")
            os.chown(path, user.pw_uid, user.pw_gid)

    def _command(self, binary: str, *arguments: str) -> list[str]:
        if self._as_rabbitmq_user:  # runuser sets HOME to the rabbitmq user's home: set it back
            return ["runuser", "-u", "rabbitmq", "--", "env", f"HOME={self.directory}", binary, *arguments]
        return [binary, *arguments]


class RabbitCluster:
    """Private RabbitMQ nodes on this machine joined into one cluster (three by default).

    Each node has its own ports, name and directory, as a :class:`RabbitNode`; they share an Erlang cookie.
    :meth:`start` starts them all and joins every node to the first (``rabbitmqctl stop_app``,
    ``join_cluster``, ``start_app``). A node that is killed and started again rejoins by itself, with its
    data, as long as another node of the cluster runs. Queues declared with ``x-queue-type: quorum``
    (amphora's ``queue_type="quorum"``) get a replica on every node.
    """

    def __init__(self, size: int = 3, name: str | None = None) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        prefix = name or f"amphora-cluster-{uuid.uuid4().hex[:6]}"
        cookie = uuid.uuid4().hex.upper()
        self.nodes: list[RabbitNode] = [_ClusterNode(f"{prefix}-{i}", cookie) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        """The AMQP URL of every node, in node order (give them all to clients and servers: ``urls=``)."""
        return [node.url for node in self.nodes]

    def start(self, index: int | None = None) -> Self:
        """Start every node (in parallel) and join them into a cluster; return once all accept AMQP.

        With ``index``, start only that node again (after :meth:`kill`), on its ports and data: it rejoins
        the cluster by itself.
        """
        if index is not None:
            self.nodes[index].start()
            return self
        starting = [gevent.spawn(node.start) for node in self.nodes]
        gevent.joinall(starting)
        for greenlet in starting:
            if greenlet.exception is not None:
                self.close()
                raise greenlet.exception
        first = self.nodes[0]
        try:
            for node in self.nodes[1:]:
                if first.nodename in self.running_nodes(node):
                    continue  # already a member (start() after stop())
                node.ctl("stop_app")
                node.ctl("join_cluster", first.nodename)
                node.ctl("start_app")
                node._wait_until_listening()
            members = self.running_nodes(first)
            expected = {node.nodename for node in self.nodes}
            if set(members) != expected:
                raise RabbitNodeError(f"the cluster runs {sorted(members)}, expected {sorted(expected)}")
        except BaseException:
            self.close()
            raise
        return self

    def running_nodes(self, asked: RabbitNode | None = None) -> list[str]:
        """The names of the cluster's running nodes, as ``asked`` (by default the first running node) sees it."""
        node = asked or next((n for n in self.nodes if n.running), None)
        if node is None:
            return []
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        return list(status.get("running_nodes", []))

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (like ``kill -9``); the others go on."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Kill node ``index`` and start it again."""
        self.kill(index)
        self.start(index)

    def pause(self, index: int) -> None:
        """Freeze node ``index`` (SIGSTOP)."""
        self.nodes[index].pause()

    def resume(self, index: int) -> None:
        """Thaw node ``index`` (SIGCONT)."""
        self.nodes[index].resume()

    def index_of_port(self, port: int) -> int:
        """The index of the node listening for AMQP on ``port`` (e.g. ``link.connection.parameters.port``)."""
        for index, node in enumerate(self.nodes):
            if node.port == port:
                return index
        raise ValueError(f"no node of the cluster listens on port {port}")

    def stop(self) -> None:
        """Stop every node politely, the first last."""
        for node in reversed(self.nodes):
            node.stop()

    def close(self) -> None:
        """Stop every node and delete their directories."""
        for node in self.nodes:
            node.kill()  # no need to be polite: everything is thrown away
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        states = ", ".join(f"{n.port} {'running' if n.running else 'stopped'}" for n in self.nodes)
        return f"<RabbitCluster {len(self.nodes)} nodes: {states}>"
