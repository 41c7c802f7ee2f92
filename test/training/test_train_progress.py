"""Training progress a log file can follow: step, loss and time left, at most every
``trainer.progress_seconds``, when no bar is shown."""
from __future__ import annotations

import logging

from test_train import make_trainer


def test_progress_lines_give_step_loss_and_time_left_worked_by_hand():
    from depth_perception_training.train.logging import ProgressLines

    now = [100.0]
    lines = ProgressLines(start_step=10, total=110, seconds=30, clock=lambda: now[0])
    now[0] = 112.0                                   # 12 s in, step 11: under 30 s, silent
    assert lines.line(11, 0.5) is None
    now[0] = 140.0                                   # 40 s for 20 steps: 2 s/step, 90 left
    assert lines.line(30, 0.25) == "step 30/110 loss 0.2500 (2.00 s/step, 2 min 40 s left)"
    now[0] = 141.0                                   # 1 s after the last line: silent
    assert lines.line(31, 0.25) is None
    now[0] = 150.0                                   # the last step always prints
    assert lines.line(110, 0.125) == "step 110/110 loss 0.1250 (0.50 s/step, 0 min 00 s left)"
    assert ProgressLines(0, 5, 0, clock=lambda: now[0]).line(5, 1.0) is None   # 0: off


def test_trainer_writes_progress_lines_to_a_log_without_a_bar(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="depth_perception_training.train.trainer"):
        make_trainer(tmp_path / "run", 4, progress=True, progress_seconds=1e-9).fit()
    lines = [r.getMessage() for r in caplog.records if " s/step" in r.getMessage()]
    # pytest's stderr is no terminal: no tqdm bar, one line per step here
    assert [line.split(" loss")[0] for line in lines] == [
        f"run: step {k}/4" for k in (1, 2, 3, 4)]
