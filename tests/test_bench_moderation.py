"""bench/moderation.py's report, pure: what it prints for a run with a straggler."""

from __future__ import annotations

import pytest

from bench.moderation import report


def test_a_five_second_window_without_comments_is_printed_as_a_dash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A label read 20 s after the rest stretches the windows over seconds when no comment was
    sent: those print "-" (the report raised IndexError on them)."""
    sent = {"a": 0.0, "b": 1.0, "c": 12.0}
    labelled = {"a": (0.002, 0.004), "b": (1.002, 1.010), "c": (12.001, 32.0)}
    report("run", 500, 15, sent, labelled)
    per_window = capsys.readouterr().out.splitlines()[-1]
    assert per_window == "  end-to-end p99 per 5 s: 10 - 20000"
