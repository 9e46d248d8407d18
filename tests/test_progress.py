"""Progress of long work: a bar on a terminal, log lines with an ETA without one."""
from __future__ import annotations

import logging

from robin_plugin.progress import LogProgress, is_terminal, progress


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_lines_at_start_every_interval_and_end(caplog):
    clock = _Clock()
    with caplog.at_level(logging.INFO, logger="robin_plugin.progress"):
        bar = LogProgress(total=100, desc="apgd-ce", unit="pt", every_s=30, clock=clock)
        for _ in range(10):  # 10 points in 20 s: no line yet
            clock.t += 2
            bar.update(1)
        clock.t += 10
        bar.update(10)  # 20 points after 30 s: one line, 120 s left
        bar.set_postfix({"acc": "0.50"})
        clock.t += 5
        bar.update(5)  # only 5 s later: no line
        bar.close()
        bar.close()  # idempotent
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "apgd-ce: started (100 pt)",
        "apgd-ce: 20/100 pt (20%) after 0:30, about 2:00 left",
        "apgd-ce: 25/100 pt (25%) after 0:35, acc=0.50 (done)",
    ]


def test_iteration_reports_and_closes(caplog):
    clock = _Clock()
    with caplog.at_level(logging.INFO, logger="robin_plugin.progress"):
        for _ in LogProgress(range(3), desc="epoch 1/2", unit="step", every_s=0, clock=clock):
            clock.t += 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "epoch 1/2: started (3 step)" and lines[-1] == "epoch 1/2: 3/3 step (100%) after 0:03 (done)"
    assert len(lines) == 4  # started, after steps 1 and 2, done


def test_progress_picks_log_lines_without_a_terminal_and_nothing_when_disabled():
    assert not is_terminal()  # pytest captures stdout and stderr
    assert isinstance(progress(total=3, desc="x"), LogProgress)
    quiet = progress(total=3, desc="x", enabled=False)
    assert not isinstance(quiet, LogProgress) and quiet.disable
