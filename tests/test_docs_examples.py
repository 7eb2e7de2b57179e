"""The code examples of the documentation run, against a private broker.

Which examples run is marked in the ``.rst`` files of ``docs/`` by an RST comment (invisible in the built
pages) on the line before the block, at the block's indentation::

    .. test: run GROUP [requires=MODULE]
    .. code-block:: python

- ``run GROUP``: the Python block is executed in this test process. The blocks of one GROUP on one page
  share a namespace and run in page order, so a client block can use the ``server`` of the block before.
  ``requires=MODULE`` skips the group when MODULE cannot be imported.
- ``pytest GROUP``: the block holds pytest tests; it is executed, then each of its ``test_*`` functions is
  called, its arguments being the fixtures of their names (``amqp_url``, ``private_rabbit_node``,
  ``tls_rabbit_node``...).
- ``server GROUP [wait-for=QUEUE] [exit=N]``: the Python block is a program that blocks (for instance in
  ``server.serve(nowait=False)``); it runs in a subprocess while GROUP's blocks execute, and gets SIGTERM
  afterwards. ``wait-for=QUEUE``: the group starts once QUEUE has a consumer. ``exit=N``: the program must
  exit with status N after the SIGTERM (a graceful stop); otherwise any ending is fine.
- ``server GROUP script=PATH [wait-for=QUEUE]`` (no block follows): run the repository's script PATH so.
- ``sh GROUP`` before a ``.. code-block:: sh``: each line is a shell command (``amphora`` is
  ``python -m amphora``), run from the repository root; a line ending in ``&`` runs in the background
  until the group ends. A trailing comment ``# prints X`` requires the output X, and one mentioning
  ``exit status N`` that status (0 otherwise).
- ``help [COMMAND]`` before a ``.. code-block:: text``: the block is the ``amphora [COMMAND] --help``
  output (compared with whitespace collapsed).

In ``run`` blocks, a one-line expression statement whose trailing comment is a Python literal is checked:
``client.call.add(2, 3)  # 5`` asserts the value 5, and ``print(x)  # [1, 4]`` asserts that x is [1, 4].
Other comments are prose. Unmarked blocks are not run: fragments, or examples for hosts that do not exist.

Examples find the broker in ``AMQP_URL`` (as amphora does by default), set here to the URL of the test
session's private node (the ``amqp_url`` fixture). Clients and servers a group leaves in its namespace are
stopped at its end.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import pytest

import amphora
from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.amqp import connect
from amphora.amqp.errors import NotFound
from amphora.functions import FunctionRegistry

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARK = re.compile(r"^(?P<indent>\s*)\.\. test: (?P<kind>run|pytest|server|sh|help)\b(?P<rest>.*)$")
BLOCK = re.compile(r"^(?P<indent>\s*)\.\. code-block:: (?P<language>\S+)\s*$")
SERVER_START_TIMEOUT = 20.0


@dataclass
class Block:
    page: str
    line: int  # 1-based line in the .rst file of the block's first code line
    kind: str
    group: str
    options: dict[str, str]
    code: str = ""


@dataclass
class Group:
    page: str
    name: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}::{self.name}"


def parse_page(path: Path) -> list[Block]:
    """The marked blocks of one page, in order."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    for number, line in enumerate(lines):
        mark = MARK.match(line)
        if mark is None:
            continue
        words = mark["rest"].split()
        group = words[0] if words and "=" not in words[0] else ""
        options = dict(word.split("=", 1) for word in words if "=" in word)
        block = Block(path.name, number + 1, mark["kind"], group, options)
        if block.kind == "server" and "script" in options:
            blocks.append(block)
            continue
        following = number + 1
        while following < len(lines) and not lines[following].strip():
            following += 1
        header = BLOCK.match(lines[following]) if following < len(lines) else None
        if header is None or header["indent"] != mark["indent"]:
            raise AssertionError(f"{path.name}:{number + 1}: '.. test:' must be followed by a code-block")
        body = following + 1
        while body < len(lines) and lines[body].strip().startswith(":"):  # the directive's options
            body += 1
        end = body
        indent = len(mark["indent"])
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        first = body
        while first < end and not lines[first].strip():
            first += 1
        block.line = first + 1
        block.code = textwrap.dedent("\n".join(lines[first:end])).rstrip() + "\n"
        blocks.append(block)
    return blocks


def collect() -> tuple[list[Group], list[Block]]:
    groups: dict[tuple[str, str], Group] = {}
    helps: list[Block] = []
    for path in sorted(DOCS.glob("*.rst")):
        for block in parse_page(path):
            if block.kind == "help":
                helps.append(block)
                continue
            groups.setdefault((block.page, block.group), Group(block.page, block.group)).blocks.append(block)
    return list(groups.values()), helps


GROUPS, HELPS = collect()


# --- running Python blocks ----------------------------------------------------------------------


def trailing_comments(code: str) -> dict[int, str]:
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    return comments


class CheckLiteralComments(ast.NodeTransformer):
    """Turn ``expr  # LITERAL`` into ``__doc_check__(expr, LITERAL, line, printed)``."""

    def __init__(self, comments: dict[int, str], first_line: int) -> None:
        self.comments = comments
        self.offset = first_line - 1

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        comment = self.comments.get(node.lineno)
        if comment is None or node.lineno != node.end_lineno:
            return node
        try:
            ast.literal_eval(comment)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return node
        value, printed = node.value, False
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "print"
            and len(value.args) == 1
            and not value.keywords
        ):
            value, printed = value.args[0], True
        expected = ast.parse(comment, mode="eval").body
        call = ast.Call(
            func=ast.Name("__doc_check__", ast.Load()),
            args=[value, expected, ast.Constant(node.lineno + self.offset), ast.Constant(printed)],
            keywords=[],
        )
        return ast.copy_location(ast.Expr(call), node)


def compile_block(block: Block) -> Any:
    tree = ast.parse(block.code)
    tree = CheckLiteralComments(trailing_comments(block.code), block.line).visit(tree)
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, block.line - 1)  # tracebacks point into the .rst file
    return compile(tree, str(DOCS / block.page), "exec")


def make_checker(page: str) -> Any:
    def check(value: Any, expected: Any, line: int, printed: bool) -> None:
        if printed:
            print(value)
        assert value == expected, f"{page}:{line}: the example gives {value!r}, its comment says {expected!r}"

    return check


def stop_leftovers(namespace: dict[str, Any]) -> None:
    """Stop the clients and servers an example left running (in parallel, bounded)."""
    seen = {id(v): v for v in namespace.values() if isinstance(v, (AmqpRpcClient, AmqpRpcServer))}
    for value in namespace.values():  # also those kept in lists, as some examples do
        if isinstance(value, (list, tuple)):
            seen.update({id(v): v for v in value if isinstance(v, (AmqpRpcClient, AmqpRpcServer))})
    stoppers = [gevent.spawn(obj.stop) for obj in seen.values()]
    gevent.joinall(stoppers, timeout=15)


# --- servers in subprocesses and shell lines ----------------------------------------------------


class Background:
    """A program of a ``server`` block (or script) or a ``&`` shell line, running while its group runs."""

    def __init__(self, what: str, command: list[str] | str, log_dir: Path, shell: bool = False) -> None:
        self.what = what
        self.log = log_dir / f"background-{abs(hash(what))}.log"
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log_file, stderr=subprocess.STDOUT, shell=shell, start_new_session=True
        )

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text()

    def assert_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.what} exited early ({self.process.returncode}):\n{self.output()}")

    def terminate(self) -> int | None:
        """SIGTERM (to the whole process group), then kill after 15 s; the exit status."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log_file.close()
        return self.process.returncode


def wait_for_consumer(url: str, queue: str, server: Background) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    with connect(url) as connection:
        while time.monotonic() < deadline:
            server.assert_alive()
            channel = connection.channel()
            try:
                if channel.queue_declare(queue, passive=True).consumer_count:
                    channel.close()
                    return
                channel.close()
            except NotFound:
                pass
            gevent.sleep(0.1)
    raise AssertionError(f"{server.what}: no consumer on {queue} after {SERVER_START_TIMEOUT} s:\n{server.output()}")


def run_sh_block(block: Block, tmp_path: Path, background: list[Background]) -> None:
    amphora = f"{shlex.quote(sys.executable)} -m amphora"
    for offset, raw in enumerate(block.code.splitlines()):
        command, _, comment = raw.partition("  #")
        command, comment = command.strip(), comment.strip()
        if not command or command.startswith("#"):
            continue
        where = f"{block.page}:{block.line + offset}"
        if command.startswith("amphora "):
            command = amphora + command[len("amphora") :]
        if command.endswith("&"):
            background.append(Background(where, f"exec {command[:-1]}", tmp_path, shell=True))
            continue
        result = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=40, check=False)
        status = re.search(r"exit status (\d+)", comment)
        expected_status = int(status[1]) if status else 0
        report = f"{where}: {raw.strip()}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
        assert result.returncode == expected_status, report
        printed = re.match(r"prints (.+?)(;|$)", comment)
        if printed:
            assert result.stdout.strip() == printed[1].strip(), report


def run_pytest_block(block: Block, request: pytest.FixtureRequest) -> None:
    """Execute a block of pytest tests and call each test function with the fixtures it names."""
    namespace: dict[str, Any] = {"__name__": f"docs_{block.page}_{block.line}"}
    exec(compile_block(block), namespace)  # noqa: S102 - the documentation's own examples
    tests = [value for name, value in namespace.items() if name.startswith("test_") and callable(value)]
    assert tests, f"{block.page}:{block.line}: a 'pytest' block without test functions"
    for test in tests:
        fixtures = {name: request.getfixturevalue(name) for name in inspect.signature(test).parameters}
        test(**fixtures)


# --- the tests ----------------------------------------------------------------------------------


def test_examples_are_found():
    """The convention is in use, so a typo in a mark does not silently skip every example."""
    pages = {group.page for group in GROUPS}
    assert {"quickstart.rst", "routing.rst", "fanout.rst", "calls.rst", "handlers.rst", "pubsub.rst"} <= pages


@pytest.mark.timeout(60)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.id)
def test_example_group_runs(
    group: Group, amqp_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
):
    monkeypatch.setenv("AMQP_URL", amqp_url)
    for block in group.blocks:
        module = block.options.get("requires")
        if module and importlib.util.find_spec(module) is None:
            pytest.skip(f"{group.id} needs {module}")
    background: list[Background] = []
    expected_exits: list[tuple[Background, int]] = []
    namespace: dict[str, Any] = {"__name__": "__main__", "__doc_check__": make_checker(group.page)}
    try:
        for block in group.blocks:
            if block.kind != "server":
                continue
            where = f"{block.page}:{block.line}"
            if "script" in block.options:
                command = [sys.executable, str(ROOT / block.options["script"])]
            else:
                program = tmp_path / f"server_{block.line}.py"
                program.write_text(block.code)
                command = [sys.executable, str(program)]
            server = Background(where, command, tmp_path)
            background.append(server)
            if "exit" in block.options:
                expected_exits.append((server, int(block.options["exit"])))
            if "wait-for" in block.options:
                wait_for_consumer(amqp_url, block.options["wait-for"], server)
        for block in group.blocks:
            if block.kind == "run":
                exec(compile_block(block), namespace)  # noqa: S102 - the documentation's own examples
            elif block.kind == "pytest":
                run_pytest_block(block, request)
            elif block.kind == "sh":
                run_sh_block(block, tmp_path, background)
        for server in background:
            server.assert_alive()
    finally:
        stop_leftovers(namespace)
        statuses = {id(server): server.terminate() for server in background}
    for server, status in expected_exits:
        assert statuses[id(server)] == status, f"{server.what} exited {statuses[id(server)]}:\n{server.output()}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("block", HELPS, ids=lambda b: f"{b.page}::amphora {b.group or ''} --help".replace("  ", " "))
def test_cli_help_in_the_docs_is_current(block: Block):
    command = [sys.executable, "-m", "amphora", *([block.group] if block.group else []), "--help"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "COLUMNS": "100"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert " ".join(block.code.split()) == " ".join(result.stdout.split()), (
        f"{block.page}:{block.line}: the help text differs from the command's; it is now:\n{result.stdout}"
    )


class RecordingServer:
    """Stands in for AmqpRpcServer: records the names functions are registered under, serves nothing."""

    def __init__(self, service: str, **options: Any) -> None:
        self.functions = FunctionRegistry()

    def add_function(self, *args: Any, **kwargs: Any) -> Any:
        return self.functions.add(*args, **kwargs)

    def serve(self, nowait: bool = True) -> None:
        pass


def registered_functions(code: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``code`` registers on its server: ``{name: the function's code object}``."""
    monkeypatch.setattr(amphora, "AmqpRpcServer", RecordingServer)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code, "<example>", "exec"), namespace)
    functions = namespace["server"].functions._functions
    return {name: function.func.__code__.co_code for name, function in functions.items()}


def test_the_quickstart_server_is_the_example_math_server(monkeypatch):
    """Both serve "math": a quickstart server left running must answer everything the demo's client calls."""
    (quickstart,) = [b for b in parse_page(DOCS / "quickstart.rst") if b.kind == "server" and b.group == "math"]
    example = (ROOT / "examples" / "math_server.py").read_text()
    assert registered_functions(quickstart.code, monkeypatch) == registered_functions(example, monkeypatch)
