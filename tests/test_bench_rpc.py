"""bench.rpc's summary: which ratios it computes and where it judges the targets (pure logic, no broker)."""

from __future__ import annotations

import pytest

from bench import rpc

pytestmark = pytest.mark.timeout(30)


def _runs(p50: float, calls_per_s: float) -> dict[str, list[dict[str, float]]]:
    return {"W1": [{"p50 us": p50}, {"p50 us": p50 + 10}, {"p50 us": p50 - 10}], "W2": [{"calls/s": calls_per_s}]}


RESULTS = {
    rpc.RAW: _runs(400, 16_000),
    rpc.FLOOR: _runs(560, 10_000),
    "transient": _runs(540, 13_000),
}


def test_every_mode_is_compared_with_raw_and_with_the_bare_protocol_client():
    found, ratios, verdicts = rpc.summarize(RESULTS, ["transient"], rpc.QUICK)
    assert found[rpc.RAW]["W1"]["p50 us"] == 400  # the median of the runs
    assert list(ratios) == ["raw-protocol/raw", "transient/raw", "transient/raw-protocol"]
    assert ratios["raw-protocol/raw"]["W1"]["p50 us"] == pytest.approx(1.4)
    assert ratios["transient/raw-protocol"]["W2"]["calls/s"] == pytest.approx(1.3)
    # the targets are judged on mode/raw only
    assert verdicts == {
        "transient W1 p50 us <= 1.3x raw": {"value": pytest.approx(1.35), "met": False},
        "transient W2 calls/s >= 0.6x raw": {"value": pytest.approx(13 / 16), "met": True},
    }


def test_the_table_marks_targets_in_the_mode_to_raw_column_only():
    found, ratios, _ = rpc.summarize(RESULTS, ["transient"], rpc.QUICK)
    lines = rpc.table(found, ratios, ["transient"], ["W1", "W2"], rpc.QUICK).splitlines()
    w1 = next(line for line in lines if line.startswith("W1"))
    assert "1.40 " in w1 and "1.35 [<=1.30 MISSED]" in w1 and w1.rstrip().endswith("0.96")
    assert sum("[" in line for line in lines) == 2  # one verdict per target, none on the raw-protocol ratios


def test_other_clients_are_compared_with_their_modes_gevent_client():
    results = {**RESULTS, "transient-aio": _runs(600, 11_000), "transient-thread": _runs(640, 13_000)}
    found, ratios, verdicts = rpc.summarize(results, ["transient"], rpc.QUICK, ["aio", "thread"])
    assert list(ratios)[-2:] == ["transient-aio/transient", "transient-thread/transient"]
    assert ratios["transient-aio/transient"]["W2"]["calls/s"] == pytest.approx(11 / 13)
    assert verdicts["transient-aio W1 p50 us <= 1.15x transient"] == {"value": pytest.approx(600 / 540), "met": True}
    assert verdicts["transient-aio W2 calls/s >= 0.8x transient"]["met"] is True
    assert verdicts["transient-thread W1 p50 us <= 1.2x transient"] == {"value": pytest.approx(640 / 540), "met": True}
    assert "transient-thread W2 calls/s >= 0.8x transient" not in verdicts  # no target for it
    lines = rpc.table(found, ratios, ["transient"], ["W1", "W2"], rpc.QUICK, ["aio", "thread"]).splitlines()
    assert "transient-aio" in lines[0] and sum(line.count("[") for line in lines) == 5  # 2 raw, 3 client targets
