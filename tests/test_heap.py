"""amphora.heap.tune_malloc: a process that keeps freeing large blocks stops faulting its heap in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

CHURN = """
import resource, sys
from amphora.heap import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tuned" else False

def churn():  # 40 live 100 kB bodies, then none: what a client with large calls in flight does
    bodies = [b"x" * 100_000 for _ in range(40)]
    del bodies

churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    churn()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run_churn(mode: str, **environment: str) -> tuple[bool, int]:
    """(whether tune_malloc tuned, page faults of 50 rounds of churn) in a new process."""
    output = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return output[0] == "True", int(output[1])


def test_tuned_heap_keeps_what_it_freed() -> None:
    _, faults_by_default = run_churn("default")
    tuned, faults_tuned = run_churn("tuned")
    assert tuned
    assert faults_by_default > 50 * 40 * 10  # each round trims the heap and faults its 4 MB in again
    assert faults_tuned < faults_by_default / 20


def test_malloc_settings_of_the_environment_win() -> None:
    tuned, faults = run_churn("tuned", MALLOC_TOP_PAD_="0")
    assert not tuned
    assert faults > 50 * 40 * 10
    tuned, _ = run_churn("tuned", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert not tuned
