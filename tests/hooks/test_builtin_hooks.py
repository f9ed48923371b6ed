"""Tests of the built-in hooks in tpufit/hooks/: each checked by its effect."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import compiled, scalar_events, tiny_data

import tpufit
from tpufit.hooks import LoggingHook, ProfilerHook, StopAtStepHook, SummaryHook


@pytest.mark.parametrize(("last_step", "loops"), [(7, [4, 3]), (4, [4]), (13, [4, 4, 2, 3])])
def test_stop_at_step_ends_exactly_at_the_step_shortening_the_last_loop(last_step, loops):
    x, y = tiny_data(80)  # 10 steps per epoch
    tm = compiled(iterations_per_loop=4)
    sizes = []

    class Sizes(tpufit.Hook):
        def after_run(self, ctx, values):
            sizes.append(ctx.steps)

    tm.fit(x, y, batch_size=8, epochs=5, hooks=[StopAtStepHook(last_step=last_step), Sizes()],
           verbose=0)  # fmt: skip
    assert tm.global_step == last_step
    assert sizes == loops
    assert int(tm.model.optimizer.iterations) == last_step


def test_stop_at_step_num_steps_counts_from_the_runs_start_and_a_reached_step_trains_nothing():
    x, y = tiny_data(80)
    tm = compiled()
    tm.fit(x, y, batch_size=8, epochs=5, hooks=[StopAtStepHook(num_steps=6)], verbose=0)
    tm.fit(x, y, batch_size=8, epochs=5, hooks=[StopAtStepHook(num_steps=6)], verbose=0)
    assert tm.global_step == 12
    before = tm.model.get_weights()
    history = tm.fit(x, y, batch_size=8, epochs=5, hooks=[StopAtStepHook(last_step=12)], verbose=0)
    assert tm.global_step == 12 and history.epoch == []
    for after, kept in zip(tm.model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(after, kept)


def test_stop_at_step_needs_exactly_one_limit():
    with pytest.raises(tpufit.InvalidArgumentError, match="exactly one"):
        StopAtStepHook()
    with pytest.raises(tpufit.InvalidArgumentError, match="exactly one"):
        StopAtStepHook(num_steps=1, last_step=2)
    with pytest.raises(tpufit.InvalidArgumentError, match="last_step=-1"):
        StopAtStepHook(last_step=-1)


def test_logging_hook_writes_loss_and_speed_every_n_steps():
    x, y = tiny_data(80)
    lines = []
    hook = LoggingHook(every_n_steps=5, log_fn=lines.append)
    compiled(iterations_per_loop=4).fit(x, y, batch_size=8, epochs=2, hooks=[hook], verbose=0)
    # Loops end at global steps 4, 8, 10, 14, 18, 20: a line once >= 5 steps passed.
    assert [int(line.split("global step ")[1].split(":")[0]) for line in lines] == [8, 14, 20]
    assert all("loss=" in line and "steps/s" in line and "examples/s" in line for line in lines)


def test_summary_hook_writes_every_steps_loss_from_the_outfeed(tmp_path):
    x, y = tiny_data(80)
    losses = []

    class Losses(tpufit.Hook):
        def after_run(self, ctx, values):
            losses.extend(values.outfeed["loss"])

    tm = compiled(iterations_per_loop=4)
    tm.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y),
           hooks=[SummaryHook(str(tmp_path)), Losses()], verbose=0)  # fmt: skip
    train = scalar_events(tmp_path / "train")
    assert sorted(train["loss"]) == list(range(1, 21))
    np.testing.assert_allclose([train["loss"][s] for s in range(1, 21)], losses, rtol=1e-6)
    assert sorted(train["batch_accuracy"]) == [4, 8, 10, 14, 18, 20]
    assert sorted(train["epoch_val_loss"]) == [10, 20]


def test_profiler_hook_traces_the_chosen_loops(tmp_path):
    x, y = tiny_data(80)
    hook = ProfilerHook(str(tmp_path), first_loop=1, num_loops=2)
    compiled(iterations_per_loop=2).fit(x, y, batch_size=8, hooks=[hook], verbose=0)
    assert hook.traced_loops == [1, 2]
    assert tf.io.gfile.glob(str(tmp_path / "plugins" / "profile" / "*" / "*.xplane.pb"))
