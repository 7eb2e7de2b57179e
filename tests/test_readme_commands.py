"""README's two set-up commands work in a fresh virtual environment, on a fresh clone of the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The commands of README's "Getting started" block, without their comments."""
    text = (ROOT / "README.rst").read_text()
    block = text.split("Getting started", 1)[1].split(".. code-block:: sh", 1)[1]
    lines = [line.strip() for line in block.split("\n\n", 2)[1].splitlines()]
    return [re.sub(r"\s+#.*$", "", line) for line in lines if line]


@pytest.mark.timeout(900)
def test_readme_commands_in_a_fresh_virtualenv(tmp_path):
    assert readme_commands() == ["./run demo", "./run tests"]
    checkout = tmp_path / "amphora"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("AMQP_URL", None)
    env.pop("PYTHONPATH", None)

    def run(*arguments: str) -> str:
        done = subprocess.run(
            arguments, cwd=checkout, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    demo = run("./run", "demo")  # installs the package and its test extras into the fresh environment
    assert "add(2, 3) = 5" in demo and "raised remotely: ZeroDivisionError" in demo
    # the full suite is this suite: from the fresh environment, run a quick part of it
    assert re.search(r"\d+ passed", run("./run", "tests", "-q", "-p", "no:cacheprovider", "tests/test_protocol.py"))
