"""Tests of tpufit/hooks/base.py and the events of a run: order, pairing, outfeed, host_call."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import compile_args, compiled, copy_model, tiny_data, tiny_model

import tpufit
from tpufit.hooks.base import HookList, Run, first_non_finite
from tpufit.run.progress import Progress


class Recorder(tpufit.Hook):
    """Records every event with the values a hook sees."""

    def __init__(self, fail_in: str | None = None, fail_at_loop: int = 0, error=RuntimeError):
        self.events: list[tuple] = []
        self.outfeeds: list[dict] = []
        self.fail_in = fail_in
        self.fail_at_loop = fail_at_loop
        self.error = error
        self.loops = 0
        self.end_error = "not called"

    def _maybe_fail(self, event):
        if event == self.fail_in and self.loops >= self.fail_at_loop:
            raise self.error(f"failing in {event}")

    def begin(self, run):
        self.events.append(("begin", run.mode))
        self._maybe_fail("begin")

    def after_create_session(self, run):
        self.events.append(("after_create_session", run.mode))

    def epoch_begin(self, run, epoch):
        self.events.append(("epoch_begin", epoch))

    def before_run(self, ctx):
        self.events.append(("before_run", ctx.epoch, ctx.first_step, ctx.steps, ctx.global_step))

    def after_run(self, ctx, values):
        self.events.append(("after_run", ctx.epoch, ctx.last_step, ctx.steps, ctx.global_step))
        self.outfeeds.append(values.outfeed)
        self.loops += 1
        self._maybe_fail("after_run")

    def epoch_end(self, run, epoch, logs):
        self.events.append(("epoch_end", epoch, sorted(logs)))

    def end(self, run):
        self.events.append(("end", run.mode))
        self.end_error = run.error


def test_fit_calls_every_event_in_order_with_loop_positions_and_global_steps():
    x, y = tiny_data(80)
    recorder = Recorder()
    with pytest.warns(UserWarning, match="ran out of data"):  # 10 steps a pass: epochs of 6, 4
        compiled().fit(x, y, batch_size=8, epochs=2, steps_per_epoch=6, hooks=[recorder], verbose=0)
    loss_and_accuracy = ["accuracy", "loss"]
    assert recorder.events == [
        ("begin", "train"),
        ("after_create_session", "train"),
        ("epoch_begin", 0),
        ("before_run", 0, 0, 4, 0),
        ("after_run", 0, 3, 4, 0),
        ("before_run", 0, 4, 2, 4),
        ("after_run", 0, 5, 2, 4),
        ("epoch_end", 0, loss_and_accuracy),
        ("epoch_begin", 1),
        ("before_run", 1, 0, 4, 6),
        ("after_run", 1, 3, 4, 6),
        ("epoch_end", 1, loss_and_accuracy),
        ("end", "train"),
    ]
    assert recorder.end_error is None


def test_evaluate_and_predict_runs_have_one_epoch_and_stop_at_the_data_end():
    x, y = tiny_data(20)
    tm = compiled(iterations_per_loop=2)
    recorder = Recorder()
    tm.evaluate(x, y, batch_size=8, hooks=[recorder], verbose=0)
    assert [e[0] for e in recorder.events] == [
        "begin", "after_create_session", "epoch_begin", "before_run", "after_run", "before_run",
        "after_run", "epoch_end", "end",
    ]  # fmt: skip
    assert recorder.events[5][:3] == ("before_run", 0, 2)  # the stop batch comes in loop 2
    assert recorder.events[6][2] == 2  # the loop ran one step: the last step has index 2
    recorder = Recorder()
    predictions = tm.predict(x, batch_size=8, hooks=[recorder], verbose=0)
    outputs = np.concatenate([o["outputs"] for o in recorder.outfeeds])
    np.testing.assert_array_equal(outputs, predictions)
    assert outputs.shape[0] == 20


def test_end_runs_for_every_begun_hook_when_a_loop_fails_and_weights_are_those_of_the_last_loop():
    x, y = tiny_data(64)
    tm = compiled(iterations_per_loop=2)
    failing, other = Recorder(fail_in="after_run", fail_at_loop=2), Recorder()
    with pytest.raises(RuntimeError, match="failing in after_run"):
        tm.fit(x, y, batch_size=8, epochs=3, shuffle=False, hooks=[failing, other], verbose=0)
    assert failing.events[-1] == ("end", "train") and other.events[-1] == ("end", "train")
    assert isinstance(other.end_error, RuntimeError)
    assert tm.global_step == 4  # two loops of 2 steps finished before the failure
    twin = copy_model(tiny_model())
    twin.compile(**compile_args())
    twin.fit(x[:32], y[:32], batch_size=8, shuffle=False, verbose=0)
    for ours, keras_weights in zip(tm.model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(ours, keras_weights, rtol=1e-5, atol=1e-6)


def test_a_keyboard_interrupt_ends_the_run_at_once_and_the_next_fit_works():
    x, y = tiny_data(64)
    tm = compiled(iterations_per_loop=2)
    interrupt = Recorder(fail_in="after_run", fail_at_loop=1, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        tm.fit(x, y, batch_size=8, epochs=5, hooks=[interrupt], verbose=0)
    assert interrupt.events[-1] == ("end", "train")
    assert tm.global_step == 2
    tm.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert tm.global_step == 2 + 8


def test_only_hooks_whose_begin_returned_get_end():
    first, failing, last = Recorder(), Recorder(fail_in="begin"), Recorder()
    run = Run("eval", tpu_model=None, progress=Progress())
    with pytest.raises(RuntimeError), HookList([first, failing, last]).running(run):
        pass  # never reached: begin fails
    assert first.events == [("begin", "eval"), ("end", "eval")]
    assert failing.events == [("begin", "eval")]
    assert last.events == []


def test_an_end_that_fails_does_not_hide_the_error_that_ended_the_run():
    class FailingEnd(tpufit.Hook):
        def end(self, run):
            raise ValueError("end failed")

    run = Run("eval", tpu_model=None, progress=Progress())
    with pytest.raises(KeyError), HookList([FailingEnd()]).running(run):
        raise KeyError("the run failed")
    with (
        pytest.raises(ValueError, match="end failed"),
        HookList([FailingEnd()]).running(Run("eval", tpu_model=None, progress=Progress())),
    ):
        pass


def test_a_keras_callback_given_as_a_hook_is_rejected_pointing_to_callbacks():
    with pytest.raises(tpufit.InvalidTypeError, match="callbacks="):
        compiled().fit(*tiny_data(8), hooks=[keras.callbacks.History()], verbose=0)


def test_request_stop_in_after_run_ends_training_after_that_loop():
    class StopAfterFirstLoop(tpufit.Hook):
        def after_run(self, ctx, values):
            ctx.request_stop()

    x, y = tiny_data(80)
    tm = compiled(iterations_per_loop=3)
    history = tm.fit(x, y, batch_size=8, epochs=4, hooks=[StopAfterFirstLoop()], verbose=0)
    assert tm.global_step == 3
    assert len(history.history["loss"]) == 1


def test_outfeed_of_1000_steps_in_loops_of_100_equals_1000_one_step_loops():
    x, y = tiny_data(8000, seed=3)
    losses = {}
    for iterations_per_loop in (100, 1):
        recorder = Recorder()
        # One step function for both runs: "auto" would time XLA against the plain
        # step in the first loops, which the two loop layouts split differently.
        tm = compiled(iterations_per_loop=iterations_per_loop, **compile_args(), jit_compile=True)
        tm.fit(x, y, batch_size=8, shuffle=False, hooks=[recorder], verbose=0)
        losses[iterations_per_loop] = np.concatenate([o["loss"] for o in recorder.outfeeds])
        assert len(recorder.outfeeds) == 1000 // iterations_per_loop
    assert losses[100].shape == (1000,)
    np.testing.assert_array_equal(losses[100], losses[1])
    assert len(np.unique(losses[100])) > 900  # every step's own loss, not the last one repeated


class LearningRateAndGradientNorm(tpufit.Hook):
    """Declares two per-step outfeed values, as TPUEstimator's host_call."""

    def __init__(self):
        self.outfeeds = []

    def host_call(self, mode):
        return {"lr": self.learning_rate, "grad_norm": self.grad_norm} if mode == "train" else {}

    def learning_rate(self, tensors):
        return tensors.model.optimizer.learning_rate

    def grad_norm(self, tensors):
        return tf.linalg.global_norm(tensors.gradients)

    def before_run(self, ctx):
        if ctx.first_step == 4:
            ctx.model.model.optimizer.learning_rate = 0.05

    def after_run(self, ctx, values):
        self.outfeeds.append(values.outfeed)


def test_host_call_values_come_back_per_step_and_a_new_learning_rate_applies_without_retrace():
    x, y = tiny_data(64)
    tm = compiled(iterations_per_loop=4)
    initial = tm.model.get_weights()
    hook = LearningRateAndGradientNorm()
    tm.fit(x, y, batch_size=8, shuffle=False, hooks=[hook], verbose=0)
    lr = np.concatenate([o["lr"] for o in hook.outfeeds])
    np.testing.assert_allclose(lr, [0.1] * 4 + [0.05] * 4)
    assert tm.traces["train"] == 1
    twin = tiny_model()
    twin.set_weights(initial)
    with tf.GradientTape() as tape:
        loss = compile_args()["loss"](y[:8], twin(x[:8]))
    expected = tf.linalg.global_norm(tape.gradient(loss, twin.trainable_weights))
    norms = np.concatenate([o["grad_norm"] for o in hook.outfeeds])
    assert norms.shape == (8,)
    np.testing.assert_allclose(norms[0], float(expected), rtol=1e-5)


def test_a_host_call_name_declared_twice_is_rejected():
    class Twice(tpufit.Hook):
        def host_call(self, mode):
            return {"loss": lambda tensors: tensors.logs["loss"]}

    with pytest.raises(tpufit.InvalidArgumentError, match="host_call"):
        compiled().fit(*tiny_data(8), hooks=[Twice()], verbose=0)

    class GuardsName(tpufit.Hook):
        def host_call(self, mode):
            return {"non_finite": lambda tensors: tensors.logs["loss"]}

    with pytest.raises(tpufit.InvalidArgumentError, match="'non_finite'"):
        HookList([GuardsName()]).host_calls("train")


def test_limit_steps_shortens_a_loop_and_rejects_zero():
    class Limit(tpufit.Hook):
        def before_run(self, ctx):
            ctx.limit_steps(3)

    x, y = tiny_data(80)
    recorder = Recorder()
    compiled(iterations_per_loop=4).fit(x, y, batch_size=8, hooks=[Limit(), recorder], verbose=0)
    assert [e[3] for e in recorder.events if e[0] == "after_run"] == [3, 3, 3, 1]
    run = Run("train", tpu_model=None, progress=Progress())
    with pytest.raises(tpufit.InvalidArgumentError, match="Received: steps=0"):
        tpufit.RunContext(run, epoch=0, first_step=0, steps=4).limit_steps(0)


def test_first_non_finite_finds_the_first_bad_entry():
    assert first_non_finite(np.array([1.0, 2.0])) is None
    assert first_non_finite(np.array([1.0, np.inf, np.nan])) == 1
