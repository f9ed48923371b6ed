"""Tests of tpufit/hooks/progress_bar.py: the bar counts the true steps.

`verbose` has Keras's meanings; an epoch that an exception ends never shows as
complete. The notebook display is tested in tests/test_notebook.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import compiled, tiny_data

import tpufit
from tpufit.hooks.progress_bar import format_logs, verbosity


def final_bars(err: str) -> list[str]:
    """The last rendering of every bar in tqdm's output (bars end with a newline)."""
    return [line.split("\r")[-1] for line in err.split("\n") if line.strip()]


def test_verbose_1_shows_one_bar_per_epoch_ending_at_the_true_step_count(capsys):
    x, y = tiny_data(80)  # 10 steps per epoch in loops of 4, 4, 2
    compiled().fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=1)
    bars = final_bars(capsys.readouterr().err)
    assert len(bars) == 2
    for epoch, bar in enumerate(bars, start=1):
        assert bar.startswith(f"Epoch {epoch}/2")
        assert "10/10" in bar
        assert re.search(r"loss=\d", bar) and "val_loss=" in bar and "examples/s=" in bar


def test_verbose_2_writes_one_line_per_epoch_and_no_bar(capsys):
    x, y = tiny_data(80)
    compiled().fit(x, y, batch_size=8, epochs=3, verbose=2)
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("Epoch")]
    assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert all(" - 10 steps - " in line and "loss: " in line for line in lines)
    assert "it/s" not in captured.err and "step/s" not in captured.err


def test_verbose_0_prints_nothing(capsys):
    x, y = tiny_data(40)
    tm = compiled()
    tm.fit(x, y, batch_size=8, epochs=2, verbose=0)
    tm.evaluate(x, y, batch_size=8, verbose=0)
    tm.predict(x, batch_size=8, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_evaluate_and_predict_bars_count_their_steps(capsys):
    x, y = tiny_data(36)  # 5 steps of 8, the last padded
    tm = compiled(iterations_per_loop=2)
    tm.evaluate(x, y, batch_size=8, verbose=1)
    tm.predict(x, batch_size=8, verbose="auto")
    bars = final_bars(capsys.readouterr().err)
    assert bars[0].startswith("Evaluate") and "5/5" in bars[0] and "accuracy=" in bars[0]
    assert bars[1].startswith("Predict") and "5/5" in bars[1]


def test_verbosity_and_formatting_follow_keras():
    assert [verbosity(v) for v in ("auto", 0, 1, 2)] == [1, 0, 1, 2]
    assert format_logs({"loss": 0.123456, "name": "x", "n": 3}) == {"loss": "0.1235", "n": "3"}


class _RaiseAt(tpufit.Hook):
    """Raises `error` in the event `where` of the second epoch."""

    def __init__(self, where: str, error: BaseException) -> None:
        self.where, self.error = where, error

    def after_run(self, ctx, values):
        if self.where == "after_run" and ctx.epoch == 1 and ctx.first_step > 0:
            raise self.error

    def epoch_end(self, run, epoch, logs):
        if self.where == "epoch_end" and epoch == 1:
            raise self.error


@pytest.mark.parametrize(
    "where, error, shown",
    [
        ("after_run", KeyboardInterrupt(), "(interrupted)"),
        ("epoch_end", RuntimeError("validation broke"), "(failed: RuntimeError)"),
    ],
)
def test_an_epoch_that_an_exception_ends_is_not_shown_complete(capsys, where, error, shown):
    x, y = tiny_data(80)  # 10 steps per epoch in loops of 4, 4, 2
    with pytest.raises(type(error)):
        compiled().fit(x, y, batch_size=8, epochs=3, verbose=1, hooks=[_RaiseAt(where, error)])
    bars = final_bars(capsys.readouterr().err)
    assert len(bars) == 2 and "10/10" in bars[0] and "100%" in bars[0]
    assert bars[1].startswith(f"Epoch 2/3 {shown}") and "%" not in bars[1]
    # All ten steps ran before epoch_end failed; the bar says so but does not read as done.
    assert ("10/10 steps" if where == "epoch_end" else "4/10 steps") in bars[1]


def test_a_non_finite_loss_leaves_its_epoch_shown_failed(capsys):
    x, y = tiny_data(80)
    x[44] = np.nan  # in step 6, the second loop of 4
    with pytest.raises(tpufit.NonFiniteLossError):
        compiled().fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=1)
    (bar,) = final_bars(capsys.readouterr().err)
    assert bar.startswith("Epoch 1/2 (failed: NonFiniteLossError)") and "4/10 steps" in bar
    assert "%" not in bar
