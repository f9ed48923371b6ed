"""TensorBoard summaries in a model_dir, read back from the event files TensorFlow wrote."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tensorflow as tf
from conftest import compile_args, scalar_events, tiny_data, tiny_model

import tpufit
from tpufit.model_dir.summaries import EvalSummaryWriter

ROWS, BATCH, LOOP = 80, 8, 4  # 10 steps an epoch; loops end at steps 4, 8, 10, 14, 18, 20


class Losses(tpufit.Hook):
    """Keeps every step's loss from the outfeed."""

    def __init__(self):
        self.losses: list[float] = []

    def after_run(self, ctx, values):
        self.losses.extend(values.outfeed["loss"])


def model_in(directory, **config) -> tpufit.TPUModel:
    tm = tpufit.TPUModel(
        tiny_model(), iterations_per_loop=LOOP, model_dir=str(directory),
        config=tpufit.RunConfig(**config),
    )  # fmt: skip
    tm.compile(**compile_args())
    return tm


@pytest.mark.slow
def test_fit_writes_every_steps_loss_and_the_metrics_every_save_summary_steps(tmp_path):
    x, y = tiny_data(ROWS)
    losses = Losses()
    tm = model_in(tmp_path, save_summary_steps=6)
    history = tm.fit(x, y, batch_size=BATCH, epochs=2, validation_data=(x[:24], y[:24]),
                     hooks=[losses], verbose=0)  # fmt: skip
    train = scalar_events(tmp_path / "train")
    assert sorted(train["loss"]) == list(range(1, 21))
    np.testing.assert_allclose([train["loss"][s] for s in range(1, 21)], losses.losses, rtol=1e-6)
    # Written at the first loop boundary at least 6 steps after the last write.
    for tag in ("batch_loss", "batch_accuracy", "global_step/sec", "examples/sec"):
        assert sorted(train[tag]) == [8, 14, 20], tag
    assert all(value > 0 for value in train["examples/sec"].values())
    np.testing.assert_allclose([train["epoch_loss"][s] for s in (10, 20)],
                               history.history["loss"], rtol=1e-6)  # fmt: skip
    evaluated = scalar_events(tmp_path / "eval")
    for name in ("loss", "accuracy"):
        assert sorted(evaluated[name]) == [10, 20]
        np.testing.assert_allclose([evaluated[name][s] for s in (10, 20)],
                                   history.history[f"val_{name}"], rtol=1e-6)  # fmt: skip


def test_evaluate_writes_its_metrics_at_the_global_step_it_evaluated(tmp_path):
    x, y = tiny_data(ROWS)
    tm = model_in(tmp_path)
    tm.fit(x, y, batch_size=BATCH, verbose=0)
    scores = tm.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    assert scalar_events(tmp_path / "eval") == {
        name: {10: pytest.approx(v)} for name, v in scores.items()
    }


def test_save_summary_steps_none_writes_no_events(tmp_path):
    x, y = tiny_data(ROWS)
    tm = model_in(tmp_path, save_summary_steps=None)
    tm.fit(x, y, batch_size=BATCH, validation_data=(x, y), verbose=0)
    tm.evaluate(x, y, verbose=0)
    assert not tf.io.gfile.glob(str(tmp_path / "*" / "events.out.tfevents.*"))


def test_log_step_count_steps_logs_loss_step_and_speed_to_the_tpufit_logger(caplog, capsys):
    x, y = tiny_data(ROWS)
    losses = Losses()
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=LOOP,
                         config=tpufit.RunConfig(log_step_count_steps=4))  # fmt: skip
    tm.compile(**compile_args())
    with caplog.at_level(logging.INFO, logger="tpufit"):
        tm.fit(x, y, batch_size=BATCH, hooks=[losses], verbose=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "tpufit"]
    assert [line.split(", global_step/sec = ")[0] for line in lines] == [
        f"loss = {losses.losses[3]:.7g}, step = 4",
        f"loss = {losses.losses[7]:.7g}, step = 8",
    ]
    assert all(float(line.rsplit("= ", 1)[1]) > 0 for line in lines)
    assert capsys.readouterr().out == ""


def test_eval_summaries_write_each_scalar_at_its_step_into_one_event_file(tmp_path):
    writer = EvalSummaryWriter(str(tmp_path))
    writer.write(7, {"loss": 0.5, "accuracy": 0.25})
    writer.write(9, {"loss": 0.25, "accuracy": 0.5})
    expected = {"loss": {7: 0.5, 9: 0.25}, "accuracy": {7: 0.25, 9: 0.5}}
    assert scalar_events(tmp_path / "eval") == expected  # flushed: readable before close
    writer.close()
    assert len(tf.io.gfile.glob(str(tmp_path / "eval" / "events.out.tfevents.*"))) == 1
    assert scalar_events(tmp_path / "eval") == expected


def test_every_evaluation_of_one_model_goes_into_one_eval_event_file(tmp_path):
    x, y = tiny_data(ROWS)
    tm = model_in(tmp_path)
    history = tm.fit(x, y, batch_size=BATCH, epochs=2, validation_data=(x[:24], y[:24]),
                     verbose=0)  # fmt: skip
    logs = tm.evaluate(x[24:], y[24:], batch_size=BATCH, verbose=0, return_dict=True)
    assert len(tf.io.gfile.glob(str(tmp_path / "eval" / "events.out.tfevents.*"))) == 1
    events = tf.compat.v1.train.summary_iterator(
        tf.io.gfile.glob(str(tmp_path / "eval" / "events.out.tfevents.*"))[0]
    )
    losses = [(e.step, float(tf.make_ndarray(v.tensor))) for e in events for v in e.summary.value
              if v.tag == "loss"]  # fmt: skip
    expected = [(10, history.history["val_loss"][0]), (20, history.history["val_loss"][1]),
                (20, logs["loss"])]  # fmt: skip
    assert losses == [(step, pytest.approx(value, rel=1e-6)) for step, value in expected]


def test_only_the_chief_writes_eval_summaries(tmp_path, monkeypatch):
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    task = {"type": "worker", "index": 1}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    writer = EvalSummaryWriter(str(tmp_path))
    writer.write(7, {"loss": 0.5})
    writer.close()
    assert not tmp_path.joinpath("eval").exists()


@pytest.mark.parametrize("value", [0, -3, 2.5, "100"])
def test_save_summary_steps_must_be_a_positive_int_or_none(value):
    with pytest.raises(tpufit.InvalidArgumentError, match="save_summary_steps"):
        tpufit.RunConfig(save_summary_steps=value)


def test_long_loops_write_the_same_per_step_losses(tmp_path):
    x, y = tiny_data(ROWS)
    losses = Losses()
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=70, model_dir=str(tmp_path))
    tm.compile(**compile_args())
    tm.fit(x, y, batch_size=1, hooks=[losses], verbose=0)  # loops of 70 and 10 steps
    train = scalar_events(tmp_path / "train")
    assert sorted(train["loss"]) == list(range(1, ROWS + 1))
    np.testing.assert_array_equal([train["loss"][s] for s in range(1, ROWS + 1)],
                                  np.float32(losses.losses))  # fmt: skip


def test_a_worker_that_is_not_the_chief_writes_no_summaries(tmp_path, monkeypatch):
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    task = {"type": "worker", "index": 1}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    x, y = tiny_data(ROWS)
    tm = model_in(tmp_path / "run")
    tm.fit(x, y, batch_size=BATCH, validation_data=(x, y), verbose=0)  # train and eval
    assert not tf.io.gfile.glob(str(tmp_path / "run" / "*" / "events.out.tfevents.*"))
