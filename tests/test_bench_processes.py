"""bench.processes runs: W2 against 'amphora serve --processes N' for N = 1 and 2 (a smoke run)."""

from __future__ import annotations

import pytest

from bench import processes

pytestmark = pytest.mark.timeout(120)


def test_a_quick_run_measures_one_and_two_server_processes(capsys, amqp_url):
    processes.main(["--quick", "--url", amqp_url])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("  ")[0]: line for line in lines if "process(es)" in line}
    assert list(rows) == ["1 process(es)", "2 process(es)"]
    assert rows["1 process(es)"].rstrip().endswith("1.00")
