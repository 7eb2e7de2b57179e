"""A process that stalls past the heartbeat: its connection knows the broker closed it before it yields."""

from __future__ import annotations

import time

import pytest

from amphora.amqp import connect

pytestmark = pytest.mark.timeout(30)


def test_a_connection_the_broker_closed_during_a_stall_is_known_closed_without_yielding(amqp_url):
    connection = connect(amqp_url, heartbeat=1)
    channel = connection.channel()
    time.sleep(5)  # the stall itself (not cooperative): the broker misses our heartbeats and closes
    assert channel.is_open  # nothing ran that could have noticed
    connection.check_stall()
    assert not channel.is_open and not connection.is_open


def test_a_stall_the_broker_tolerated_leaves_the_connection_open(amqp_url):
    connection = connect(amqp_url, heartbeat=2)
    channel = connection.channel()
    time.sleep(1.6)  # late enough to look, too short for the broker to give up
    connection.check_stall()
    assert channel.is_open
    channel.queue_declare("", exclusive=True)  # and it works
    connection.close()
