"""`tpufit.train_and_evaluate`: evaluations at loop boundaries, exact, reported, resumable."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import compile_args, compiled, keras_twin, scalar_events, tiny_data, tiny_model

import tpufit

X, Y = tiny_data(96)  # 6 steps of 16 per epoch
XV, YV = tiny_data(50, seed=1)  # 4 evaluation steps, the last one partial


class Recorder(tpufit.Exporter):
    """Records every evaluation handed to exporters, with the weights it evaluated."""

    def __init__(self):
        super().__init__("unused")
        self.seen = []

    def export(self, tm, global_step, logs):
        self.seen.append((global_step, dict(logs), tm.model.get_weights()))


def run(tm, recorder=None, **kwargs):
    kwargs.setdefault("batch_size", 16)
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("shuffle", False)
    exporters = [recorder] if recorder is not None else []
    return tpufit.train_and_evaluate(tm, (X, Y), (XV, YV), exporters=exporters, **kwargs)


def evaluate_on(tm, weights) -> dict:
    tm.model.set_weights(weights)
    return tm.evaluate(XV, YV, batch_size=16, verbose=0, return_dict=True)


def test_evaluates_at_the_first_loop_boundary_after_every_n_steps_and_at_the_end():
    recorder = Recorder()
    tm = compiled(iterations_per_loop=4)
    result = run(tm, recorder, max_steps=20, eval_every_steps=6)
    # Loops end at 4, 6 (epoch end), 10, 12, 16, 18, 20.
    assert [step for step, _, _ in recorder.seen] == [6, 12, 18, 20]
    assert result == recorder.seen[-1][1]
    for evaluated, trained in zip(recorder.seen[-1][2], tm.model.get_weights(), strict=True):
        np.testing.assert_array_equal(evaluated, trained)


def test_every_evaluation_equals_evaluate_on_the_same_weights():
    recorder = Recorder()
    run(compiled(iterations_per_loop=4), recorder, max_steps=14, eval_every_steps=5)
    assert [step for step, _, _ in recorder.seen] == [6, 12, 14]
    other = compiled()
    for _, logs, weights in recorder.seen:
        assert logs == evaluate_on(other, weights)


def test_without_a_cadence_it_evaluates_once_at_the_end():
    recorder = Recorder()
    tm = compiled(iterations_per_loop=4)
    result = run(tm, recorder, max_steps=10)
    assert [step for step, _, _ in recorder.seen] == [10]
    assert tm.global_step == 10
    assert result == tm.evaluate(XV, YV, batch_size=16, verbose=0, return_dict=True)


def test_a_tiny_time_cadence_evaluates_after_every_loop():
    recorder = Recorder()
    run(compiled(iterations_per_loop=4), recorder, max_steps=12, eval_every_secs=1e-9)
    assert [step for step, _, _ in recorder.seen] == [4, 6, 10, 12]


@pytest.mark.slow
def test_callbacks_get_the_evaluations_as_val_logs_and_training_logs_stay_whole():
    history = keras.callbacks.History()
    recorder = Recorder()
    run(compiled(iterations_per_loop=4), recorder, max_steps=18, eval_every_steps=4,
        callbacks=[history])  # fmt: skip
    # Epochs end at 6, 12, 18; evaluations at 4, 10, 16 (inside them) and 18 (the end):
    # each epoch's callbacks get its latest.
    by_step = {step: logs for step, logs, _ in recorder.seen}
    assert sorted(by_step) == [4, 10, 16, 18]
    assert history.history["val_loss"] == [by_step[s]["loss"] for s in (4, 10, 18)]
    assert history.history["val_accuracy"] == [by_step[s]["accuracy"] for s in (4, 10, 18)]
    # The evaluations between the loops of an epoch leave its training metrics running.
    plain = keras.callbacks.History()
    compiled(iterations_per_loop=4).fit(X, Y, batch_size=16, max_steps=18, shuffle=False,
                                        verbose=0, callbacks=[plain])  # fmt: skip
    assert history.history["loss"] == plain.history["loss"]
    assert history.history["accuracy"] == plain.history["accuracy"]


@pytest.mark.slow
def test_resumes_from_model_dir_and_writes_eval_summaries(tmp_path):
    model_dir = str(tmp_path / "run")
    first = tpufit.TPUModel(tiny_model(), iterations_per_loop=4, model_dir=model_dir)
    first.compile(**compile_args())
    run(first, max_steps=8, eval_every_steps=6)
    recorder = Recorder()
    second = tpufit.TPUModel(tiny_model(), iterations_per_loop=4, model_dir=model_dir)
    second.compile(**compile_args())
    result = run(second, recorder, max_steps=16, eval_every_steps=4)
    assert second.global_step == 16
    assert [step for step, _, _ in recorder.seen] == [12, 16]  # loops end at 12 and 16
    again = Recorder()
    assert run(second, again, max_steps=16) == result  # nothing to train: evaluates once
    assert [step for step, _, _ in again.seen] == [16]
    summaries = scalar_events(tmp_path / "run" / "eval")
    assert sorted(summaries["loss"]) == [6, 8, 12, 16]
    assert summaries["loss"][16] == pytest.approx(result["loss"])
    assert summaries["accuracy"][16] == pytest.approx(result["accuracy"])


def test_its_evaluations_append_to_one_eval_event_file(tmp_path):
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=4, model_dir=str(tmp_path))
    tm.compile(**compile_args())
    recorder = Recorder()
    run(tm, recorder, max_steps=12, eval_every_steps=4)  # loops end at 4, 6, 10, 12
    assert len(tf.io.gfile.glob(str(tmp_path / "eval" / "events.out.tfevents.*"))) == 1
    losses = scalar_events(tmp_path / "eval")["loss"]
    assert losses == {step: pytest.approx(logs["loss"]) for step, logs, _ in recorder.seen}
    assert sorted(losses) == [4, 10, 12]


def test_save_summary_steps_none_writes_no_eval_summaries(tmp_path):
    config = tpufit.RunConfig(save_summary_steps=None)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=4, model_dir=str(tmp_path),
                         config=config)  # fmt: skip
    tm.compile(**compile_args())
    run(tm, max_steps=8, eval_every_steps=4)
    assert not (tmp_path / "eval").exists()


def test_a_dataset_trains_and_evaluates():
    train = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16).repeat()
    evaluation = tf.data.Dataset.from_tensor_slices((XV, YV)).batch(16)
    tm = compiled(iterations_per_loop=4)
    result = tpufit.train_and_evaluate(tm, train, evaluation, max_steps=8, steps_per_epoch=4,
                                       verbose=0)  # fmt: skip
    assert tm.global_step == 8
    assert result == tm.evaluate(evaluation, verbose=0, return_dict=True)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 4, "eval_every_steps": 0}, "eval_every_steps"),
        ({"max_steps": 4, "eval_every_secs": -1}, "eval_every_secs"),
        ({"max_steps": 4, "eval_steps": 1.5}, "eval_steps"),
        ({"max_steps": 4, "exporters": ["serving/"]}, "exporters"),
        ({"max_steps": 4, "validation_data": (XV, YV)}, "validation_data"),
    ],
)
def test_bad_arguments_fail_before_training_naming_the_argument(kwargs, named):
    tm = compiled()
    with pytest.raises(tpufit.TPUFitError, match=named):
        tpufit.train_and_evaluate(tm, (X, Y), (XV, YV), verbose=0, **kwargs)
    assert tm.global_step == 0


def test_eval_data_of_arrays_must_be_a_pair():
    with pytest.raises(tpufit.InvalidArgumentError, match="eval_data"):
        tpufit.train_and_evaluate(compiled(), (X, Y), XV, max_steps=4, verbose=0)
    with pytest.raises(tpufit.InvalidArgumentError, match="train_data"):
        tpufit.train_and_evaluate(compiled(), X, (XV, YV), max_steps=4, verbose=0)


def test_an_uncompiled_model_is_refused():
    tm = tpufit.TPUModel(tiny_model())
    with pytest.raises(tpufit.NotCompiledError, match="train_and_evaluate"):
        tpufit.train_and_evaluate(tm, (X, Y), (XV, YV), max_steps=4)


def test_exporters_get_the_evaluated_weights_when_the_strategy_runs_a_clone():
    # A model built outside a non-default strategy's scope is cloned; the user's model
    # gets the trained weights only at fit's end, but every export must hold the evaluated ones.
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    tm = tpufit.TPUModel(tiny_model(), strategy=strategy, iterations_per_loop=4)
    tm.compile(**compile_args())
    recorder = Recorder()
    run(tm, recorder, max_steps=8, eval_every_steps=4)
    other = compiled()
    for _, logs, weights in recorder.seen:
        assert logs == evaluate_on(other, weights)


class Events(keras.callbacks.Callback):
    """Records every callback event: its name, its batch or epoch, and its logs' names."""

    def __init__(self):
        super().__init__()
        self.seen = []
        for name in dir(keras.callbacks.Callback):
            if name.startswith("on_") and not name.startswith(("on_predict", "on_batch")):
                setattr(self, name, self._recorder(name))

    def _recorder(self, name):
        def record(*args, logs=None):
            if args and isinstance(args[-1], dict):
                *args, logs = args
            self.seen.append((name, *args, *([sorted(logs)] if logs else [])))

        return record


@pytest.mark.parametrize("steps_per_loop", [1, 3])
def test_callbacks_get_the_test_events_keras_fit_gives_its_validation(steps_per_loop):
    # A loop of tpufit makes one batch event, as one execution of Keras's steps_per_execution.
    tm = compiled(iterations_per_loop=steps_per_loop)
    twin = keras_twin(tm.model, **compile_args(), steps_per_execution=steps_per_loop)
    ours, theirs = Events(), Events()
    result = run(tm, max_steps=12, eval_every_steps=6, callbacks=[ours])  # an epoch is 6 steps
    history = twin.fit(X, Y, batch_size=16, epochs=2, validation_data=(XV, YV), shuffle=False,
                       verbose=0, callbacks=[theirs])  # fmt: skip
    assert [event[0] for event in ours.seen] == [event[0] for event in theirs.seen]
    if steps_per_loop == 1:  # Keras numbers a short last execution's end as if it were whole.
        assert ours.seen == theirs.seen
    assert ours.seen.count(("on_test_begin",)) == 2
    assert result["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
