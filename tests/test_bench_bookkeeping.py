"""bench.bookkeeping's fake link still drives the outbox: every message is published and confirmed at once."""

from __future__ import annotations

import pytest

from bench import bookkeeping

pytestmark = pytest.mark.timeout(30)


def test_the_fake_link_takes_every_publish_and_the_figures_come_out(capsys):
    # a fake missing what the outbox calls, or a publish left queued, raises here instead of timing nothing
    assert bookkeeping.outbox_cost(messages=200, repeat=2) > 0
    assert bookkeeping.pending_cost(messages=200, repeat=2) > 0
    bookkeeping.main(["--messages", "100", "--repeat", "1"])
    assert "us per message" in capsys.readouterr().out
