"""bench.services runs: one service and N served by one process, amphora beside the AMQP layer alone."""

from __future__ import annotations

import math

import pytest

from bench import services

pytestmark = pytest.mark.timeout(180)


def test_a_quick_run_measures_amphora_and_the_floor_with_the_brokers_cpu(capsys, amqp_url):
    services.main(["--quick", "--services", "20", "--floor", "--url", amqp_url])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith(("amphora", "floor"))]
    assert [(row[0], row[1]) for row in rows] == [("amphora", "1"), ("amphora", "20"), ("floor", "1"), ("floor", "20")]
    for row in rows:
        calls, broker_us = float(row[-2 if row[1] == "1" else -3].replace(",", "")), row[-1]
        assert calls > 0
        assert not math.isnan(float(broker_us.replace(",", "")))  # the session's private node is found
