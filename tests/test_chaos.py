"""A short chaos run (bench.chaos): broker, server and network faults under load; nothing lost or wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_short_chaos_run_loses_nothing(tmp_path):
    result_file = tmp_path / "chaos.json"
    # fmt: off
    command = [
        sys.executable, "-m", "bench.chaos", "--duration", "12", "--rate", "300", "--seed", "7", "--outage", "3",
        "--broker-kills", "1", "--server-kills", "1", "--network-faults", "2", "--timeout", "30",
        "--json", str(result_file),
    ]
    # fmt: on
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "verdict: passed" in run.stdout
    result = json.loads(result_file.read_text())
    assert result["issued"] >= 300 * 12 * 0.9
    assert result["ok"] == result["issued"]  # every call answered, with the right result
    assert result["lost"] == 0 and result["wrong"] == 0 and not result["errors"]
    assert result["answered_but_never_executed"] == 0
    assert result["executed"] >= result["issued"]  # at least once; duplicates are allowed
    kinds = sorted(fault["kind"] for fault in result["faults"])
    assert kinds == ["broker", "network cut", "network stall", "server"]
    assert all(fault["recovery"] is not None for fault in result["faults"])
