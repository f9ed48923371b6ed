"""LoopProgram: n steps per call from one trace, per-step outfeed, the stopping signal."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import compile_args, tiny_data, tiny_model

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import infeed, resident
from tpufit.device import outfeed, programs, steps

STRATEGY = tf.distribute.get_strategy()


def counting_step(data, signals):
    """Returns each row's value and mask: the outfeed shows which batches ran."""
    return data[0], signals["mask"]


def one_pass(rows: int, batch_size: int):
    data = (np.arange(rows, dtype="float32"),)
    return infeed.from_arrays(data, batch_size, mode=Mode.PREDICT, layout=Layout.PADDED)


def counting_program(stops: bool) -> programs.LoopProgram:
    return programs.LoopProgram(
        STRATEGY,
        counting_step,
        outfeed.gather_predictions,
        stops=stops,
        jit_compile=False,
        mode=Mode.PREDICT if stops else Mode.TRAIN,
    )


def test_one_trace_serves_every_loop_length_and_outfeeds_every_step():
    program = counting_program(stops=True)
    iterator = iter(one_pass(rows=30, batch_size=4).dataset)
    lengths = []
    for asked in (3, 1, 2):
        result = program.run(iterator, asked)
        lengths.append(result.steps)
        assert result.outfeed[0].shape == (asked, 4)
    assert lengths == [3, 1, 2]
    assert program.traces == 1


def test_programs_traced_once_each_do_not_set_off_tensorflows_retracing_warning(caplog):
    # TensorFlow warns when 5 of a function's last calls traced; a short run traces
    # several programs (modes, layouts, batch sizes) once each, which is no retracing.
    for _ in range(6):
        program = counting_program(stops=True)
        program.run(iter(one_pass(rows=8, batch_size=4).dataset), 2)
        assert program.traces == 1
    assert "retracing" not in caplog.text


def test_the_stop_signal_ends_the_loop_at_the_end_of_the_data():
    program = counting_program(stops=True)
    iterator = iter(one_pass(rows=10, batch_size=4).dataset)
    result = program.run(iterator, 100)
    assert result.stopped and result.steps == 3
    values, mask = outfeed.stack_rows(result.outfeed)
    np.testing.assert_array_equal(values[mask > 0], np.arange(10))
    again = program.run(iterator, 5)
    assert again.stopped and again.steps == 0


def iterator_over(rows: int, batch_size: int, kind: str):
    feed = one_pass(rows, batch_size)
    if kind == "stream":
        return iter(feed.dataset)
    data = (np.arange(rows, dtype="float32"),)
    offered = resident.offer(
        feed, data, mode=Mode.PREDICT, layout=Layout.PADDED, seed=None, drop_remainder=False
    )
    return offered.resident.iterator(STRATEGY)


@pytest.mark.parametrize("kind", ["stream", "resident"])
def test_loops_sharing_an_infeed_read_only_the_batches_they_run_and_one_stop_batch(kind):
    # The next batch is read ahead, at the end of a step, only when another step may run.
    program = counting_program(stops=True)
    iterator = iterator_over(rows=20, batch_size=4, kind=kind)
    results = [program.run(iterator, asked) for asked in (2, 1, 1, 3)]
    assert [r.steps for r in results] == [2, 1, 1, 1]
    assert [r.stopped for r in results] == [False, False, False, True]
    rows = [outfeed.stack_rows(r.outfeed) for r in results]
    values, mask = (np.concatenate(parts) for parts in zip(*rows, strict=True))
    np.testing.assert_array_equal(values[mask > 0], np.arange(20))
    if kind == "resident":
        assert iterator.position == 6  # five batches and the stop batch
    else:
        assert next(iterator)[1]["stop"].numpy().all()  # the stream's next: a stop batch


def test_a_loop_runs_at_least_one_step():
    with pytest.raises(ValueError, match="at least one step"):
        counting_program(stops=True).run(iter(one_pass(rows=4, batch_size=4).dataset), 0)


def test_a_training_program_ignores_stop_batches_and_runs_exactly_n_steps():
    program = counting_program(stops=False)
    result = program.run(iter(one_pass(rows=4, batch_size=4).dataset), 3)
    assert not result.stopped and result.steps == 3


def per_step_losses(iterations_per_loop: int, total: int) -> np.ndarray:
    model = tiny_model()
    model.compile(**compile_args())
    x, y = tiny_data(96)
    feed = infeed.from_arrays(
        infeed.pack_arrays(x, y), 16, mode=Mode.TRAIN, layout=Layout.PADDED, shuffle_seed=3
    )
    model.optimizer.build(model.trainable_variables)
    program = programs.LoopProgram(
        STRATEGY,
        steps.train_step_for(model, Layout.PADDED),
        outfeed.reduce_logs,
        stops=False,
        jit_compile=True,
        mode=Mode.TRAIN,
    )
    iterator = iter(feed.dataset)
    losses = []
    for _ in range(total // iterations_per_loop):
        losses.append(program.run(iterator, iterations_per_loop).outfeed["loss"])
    return np.concatenate(losses)


def test_the_outfeed_holds_every_steps_loss_equal_to_one_step_loops():
    looped = per_step_losses(iterations_per_loop=6, total=12)
    single = per_step_losses(iterations_per_loop=1, total=12)
    assert looped.shape == (12,)
    np.testing.assert_allclose(looped, single, rtol=1e-5)
    assert len(set(np.round(looped, 6))) > 1  # each step's own loss, not one repeated value


def test_stack_rows_merges_steps_into_rows():
    per_step = {"a": np.arange(12).reshape(2, 3, 2)}
    assert outfeed.stack_rows(per_step)["a"].shape == (6, 2)


class EagerProbe(keras.Model):
    """Records, at each training step, whether it runs eagerly (a debugger could stop there)."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.eagerly = []

    def call(self, x):
        return self.dense(x)

    def train_step(self, data):
        self.eagerly.append(tf.executing_eagerly())
        return super().train_step(data)


def test_run_eagerly_runs_every_step_eagerly_with_keras_results():
    x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    y = x[:, :1] * 2.0
    results = []
    for through_tpufit in (False, True):
        keras.utils.set_random_seed(0)
        model = EagerProbe()
        model(x[:1])
        if through_tpufit:
            tpufit.attach(model, iterations_per_loop=3)
        model.compile(optimizer="sgd", loss="mse", metrics=["mae"], run_eagerly=True)
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
        logs = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
        outputs = model.predict(x, batch_size=4, verbose=0)
        results.append((model.eagerly, history, logs, outputs))

    (keras_eagerly, *expected), (eagerly, *ours) = results
    assert eagerly == keras_eagerly == [True] * 6
    history, logs, outputs = ours
    for name, values in expected[0].items():
        np.testing.assert_allclose(history[name], values, rtol=1e-6)
    assert logs == pytest.approx(expected[1], rel=1e-6)
    np.testing.assert_allclose(outputs, expected[2], rtol=1e-6)
