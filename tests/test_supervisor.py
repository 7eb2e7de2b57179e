"""``amphora serve --processes N``: the restart policy alone, then a supervisor of real server processes."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from pathlib import Path

import gevent
import pytest
from gevent import subprocess
from gevent.queue import Queue

from amphora.cli import main, process_count
from amphora.supervisor import RestartPolicy, SlotState, after_exit, describe_status
from helpers import wait_until

pytestmark = pytest.mark.timeout(90)

# --- the policy, without processes ----------------------------------------------------------------


def test_a_child_that_never_served_before_anyone_did_ends_everything_at_once():
    assert after_exit(RestartPolicy(), SlotState(), served=False, ran=0.1, any_served=False) is None


def test_quick_crashes_back_off_exponentially_up_to_the_maximum():
    policy = RestartPolicy(first_delay=0.5, max_delay=4.0, stable_after=10.0)
    slot = SlotState()
    delays = [after_exit(policy, slot, served=True, ran=1.0, any_served=True) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_child_that_ran_long_enough_restarts_after_the_first_delay_again():
    policy = RestartPolicy(first_delay=0.5, stable_after=10.0)
    slot = SlotState()
    for _ in range(3):
        after_exit(policy, slot, served=True, ran=1.0, any_served=True)
    assert after_exit(policy, slot, served=True, ran=3600.0, any_served=True) == 0.5


def test_failed_starts_in_a_row_give_up_and_serving_once_resets_them():
    policy = RestartPolicy(max_failed_starts=3)
    slot = SlotState()
    assert after_exit(policy, slot, served=False, ran=0.1, any_served=True) is not None
    assert after_exit(policy, slot, served=True, ran=0.1, any_served=True) is not None  # served: counts reset
    assert after_exit(policy, slot, served=False, ran=0.1, any_served=True) is not None
    assert after_exit(policy, slot, served=False, ran=0.1, any_served=True) is not None
    assert after_exit(policy, slot, served=False, ran=0.1, any_served=True) is None


def test_exit_statuses_and_process_counts_read_well():
    assert describe_status(3) == "exited with status 3"
    assert describe_status(-9) == "was killed by signal 9 (SIGKILL)"
    assert process_count("auto") == (os.cpu_count() or 1)
    assert process_count("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 1, not 0"):
        process_count("0")
    with pytest.raises(argparse.ArgumentTypeError, match="'many' is not a whole number"):
        process_count("many")


def test_health_port_is_refused_with_processes(capsys):
    status = main(["serve", "nowhere:server", "--processes", "2", "--health-port", "8080"])
    assert status == 2
    assert "--health-port answers for one server process" in capsys.readouterr().err


# --- a supervisor of real processes -----------------------------------------------------------------

SERVER_MODULE = """\
import os
import gevent
from amphora import AmqpRpcServer

def make(url=None, concurrency=100):
    server = AmqpRpcServer({service!r}, url=url, concurrency=concurrency)

    @server.add_function
    def whoami():
        return [server.name, os.getpid()]

    @server.add_function
    def work(i):
        gevent.sleep(0.05)
        return [i, server.name]

    return server
"""


class Served:
    """``amphora serve MODULE:make --processes N`` in a child process, its stderr read line by line."""

    def __init__(self, cwd: Path, url: str, target: str, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "amphora", "serve", target, "--url", url, *options],
            cwd=cwd,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group of its own, as in a terminal
        )
        self.lines: list[str] = []
        self.new_lines: Queue = Queue()
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self.new_lines.put(line)
        self.new_lines.put(None)

    def wait_for_line(self, pattern: str, timeout: float = 30) -> re.Match:
        """The first line from now on that matches ``pattern``."""
        with gevent.Timeout(timeout, AssertionError(f"no line matching {pattern!r}: {''.join(self.lines)}")):
            while (line := self.new_lines.get()) is not None:
                if match := re.search(pattern, line):
                    return match
        raise AssertionError(f"ended without a line matching {pattern!r}: {''.join(self.lines)}")

    def wait(self, timeout: float = 60) -> int:
        status = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return status

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def served(tmp_path, amqp_url, service):
    (tmp_path / f"{service}_procs.py").write_text(SERVER_MODULE.format(service=service))
    started: list[Served] = []

    def start(*options: str, target: str = f"{service}_procs:make") -> Served:
        started.append(Served(tmp_path, amqp_url, target, *options))
        return started[-1]

    yield start
    for each in started:
        each.close()


def answering_pids(client, count: int, timeout: float = 30) -> set[int]:
    """The pids of the servers that answered ``whoami``, once ``count`` different ones did."""
    pids: set[int] = set()
    wait_until(lambda: pids.add(client.call.whoami()[1]) or len(pids) >= count, timeout=timeout)
    return pids


def test_two_processes_both_serve_and_log_which_wrote_what(served, make_client):
    supervisor = served("--processes", "2")
    client = make_client(timeout=20)
    names = set()
    wait_until(lambda: names.add(client.call.whoami()[0]) or len(names) == 2, timeout=30)
    supervisor.process.send_signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    log = "".join(supervisor.lines)
    for index in range(2):
        assert re.search(rf"\[process {index}/2 pid \d+\] amphora.cli: serving ", log)
        assert re.search(rf"\[process {index}/2 pid \d+\] amphora.cli: stopped", log)
    assert re.search(r"\[supervisor pid \d+\] amphora.supervisor: signal 15: stopping the 2 server", log)


def test_ctrl_c_reaching_every_process_stops_each_once(served, make_client):
    supervisor = served("--processes", "2")
    answering_pids(make_client(timeout=20), 2)
    os.killpg(supervisor.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the children get it too
    assert supervisor.wait() == 0
    log = "".join(supervisor.lines)
    assert log.count("stopping (finishing running requests") == 2  # the supervisor's SIGTERM found them stopping
    assert log.count("amphora.cli: stopped") == 2


def test_a_child_killed_is_restarted_with_its_exit_status_logged(served, make_client):
    supervisor = served("--processes", "2")
    client = make_client(timeout=20)
    victim = min(answering_pids(client, 2))
    results = [client.defer.work(i) for i in range(200)]
    wait_until(lambda: sum(result.ready() for result in results) >= 20, timeout=30)
    os.kill(victim, signal.SIGKILL)  # under load: the requests it held go to the other process
    supervisor.wait_for_line(rf"process \d \(pid {victim}\) was killed by signal 9 \(SIGKILL\) .*restarting it in")
    restarted = supervisor.wait_for_line(r"process \d started \(pid (\d+)\)")
    assert [result.get(timeout=60)[0] for result in results] == list(range(200))  # every call answered
    wait_until(lambda: client.call.whoami()[1] == int(restarted[1]), timeout=30)  # the new one serves too
    supervisor.process.send_signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_sigterm_under_load_stops_every_process_gracefully_and_loses_nothing(served, make_client, make_server):
    supervisor = served("--processes", "2", "--concurrency", "20")
    client = make_client(timeout=60)
    answering_pids(client, 2)
    calls = 400
    results = [client.defer.work(i) for i in range(calls)]
    wait_until(lambda: sum(result.ready() for result in results) >= 50, timeout=30)
    supervisor.process.send_signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    log = "".join(supervisor.lines)
    assert len(re.findall(r"amphora.cli: stopped", log)) == 2
    # The requests the children had taken and not started went back to the queue: another server answers them.
    server = make_server()
    server.add_function(lambda i: [i, server.name], name="work")
    server.serve()
    answers = [result.get(timeout=60) for result in results]
    assert [i for i, _ in answers] == list(range(calls))  # every call made got its answer
    assert sum(name != server.name for _, name in answers) >= 50  # the children finished what they ran


def test_a_target_that_fails_to_import_ends_the_supervisor_at_once_with_its_error_once(served, tmp_path, service):
    (tmp_path / f"{service}_broken.py").write_text("raise RuntimeError('the module is broken')\n")
    supervisor = served("--processes", "2", target=f"{service}_broken:make")
    assert supervisor.wait(timeout=30) == 2
    log = "".join(supervisor.lines)
    assert log.count("RuntimeError: the module is broken") == 1
    assert "process 1" not in log
    assert re.search(r"process 0 \(pid \d+\) exited with status 1 before it served: giving up", log)


def test_a_process_that_keeps_failing_to_start_ends_everything_with_status_2(served, tmp_path, service):
    (tmp_path / f"{service}_second.py").write_text(
        SERVER_MODULE.format(service=service)
        + "\nif os.environ['AMPHORA_PROCESS'].startswith('1/'):\n    raise SystemExit(3)\n"
    )
    supervisor = served("--processes", "2", target=f"{service}_second:make")  # process 0 serves, 1 cannot
    assert supervisor.wait(timeout=60) == 2  # after 4 restarts, 0.5 + 1 + 2 + 4 s apart
    log = "".join(supervisor.lines)
    assert re.findall(r"process 1 \(pid \d+\) exited with status 3 .*restarting it in (\S+) s", log) == [
        "0.5",
        "1.0",
        "2.0",
        "4.0",
    ]
    assert re.search(r"process 1 \(pid \d+\) exited with status 3 before it served: giving up", log)
    assert re.search(r"\[process 0/2 pid \d+\] amphora.cli: stopped", log)  # the other one stopped gracefully


def test_a_missing_module_is_reported_once(served):
    supervisor = served("--processes", "3", target="no_such_module_anywhere:make")
    assert supervisor.wait(timeout=30) == 2
    assert "".join(supervisor.lines).count("no module named 'no_such_module_anywhere'") == 1


def test_children_stop_when_the_supervisor_is_killed(served, make_client):
    supervisor = served("--processes", "2")
    pids = answering_pids(make_client(timeout=20), 2)
    supervisor.process.kill()
    supervisor.wait()
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"
