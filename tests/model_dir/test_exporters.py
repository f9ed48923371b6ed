"""`tpufit.BestExporter` and `tpufit.LatestExporter`: what they export, keep and remember."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import compiled, tiny_data

import tpufit

X, Y = tiny_data(64)
XV, YV = tiny_data(40, seed=1)


def steps_in(path) -> list[int]:
    return sorted(int(name) for name in os.listdir(path) if name.isdigit())


@pytest.fixture(scope="module")
def tm():
    return compiled(iterations_per_loop=4)


def test_best_exporter_keeps_the_best_and_remembers_them_across_restarts(tmp_path, tm):
    path = tmp_path / "best"
    exporter = tpufit.BestExporter(path, metric="loss", mode="min", keep=2)
    assert exporter.export(tm, 10, {"loss": 0.5, "accuracy": 0.1}) == str(path / "10")
    assert exporter.export(tm, 20, {"loss": 0.7, "accuracy": 0.2}) is None  # not better
    assert exporter.export(tm, 30, {"loss": 0.4, "accuracy": 0.3}) is not None
    assert steps_in(path) == [10, 30]
    # A new process (a new exporter on the same path) knows the best so far from the disk.
    restarted = tpufit.BestExporter(path, metric="loss", mode="min", keep=2)
    assert restarted.export(tm, 40, {"loss": 0.45, "accuracy": 0.0}) is None
    assert restarted.export(tm, 50, {"loss": 0.3, "accuracy": 0.0}) is not None
    assert steps_in(path) == [30, 50]  # the best two
    with open(path / "50" / "evaluation.json") as file:
        assert json.load(file) == {"global_step": 50, "metrics": {"loss": 0.3, "accuracy": 0.0}}


def test_best_exporter_in_max_mode(tmp_path, tm):
    exporter = tpufit.BestExporter(tmp_path, metric="accuracy", mode="max", keep=1)
    exporter.export(tm, 1, {"accuracy": 0.5})
    exporter.export(tm, 2, {"accuracy": 0.4})
    exporter.export(tm, 3, {"accuracy": 0.6})
    assert steps_in(tmp_path) == [3]


def test_latest_exporter_keeps_the_newest(tmp_path, tm):
    exporter = tpufit.LatestExporter(tmp_path, keep=2)
    for step in (4, 8, 12):
        exporter.export(tm, step, {"loss": 1.0})
    assert steps_in(tmp_path) == [8, 12]


@pytest.mark.slow
def test_an_export_serves_the_evaluated_weights(tmp_path):
    tm = compiled(iterations_per_loop=4)
    result = tpufit.train_and_evaluate(
        tm,
        (X, Y),
        (XV, YV),
        max_steps=6,
        batch_size=16,
        verbose=0,
        exporters=[tpufit.LatestExporter(tmp_path / "latest")],
    )
    serve = tf.saved_model.load(str(tmp_path / "latest" / "6")).signatures["serving_default"]
    (outputs,) = serve(tf.constant(XV)).values()
    np.testing.assert_array_equal(outputs.numpy(), tm.predict(XV, verbose=0))
    with open(tmp_path / "latest" / "6" / "evaluation.json") as file:
        assert json.load(file)["metrics"] == result


def test_a_metric_the_evaluation_lacks_fails_at_the_first_evaluation_naming_those_there_are(
    tmp_path,
):
    tm = compiled(iterations_per_loop=4)
    exporter = tpufit.BestExporter(tmp_path, metric="val_acc")
    with pytest.raises(tpufit.InvalidArgumentError, match="'accuracy', 'loss'") as raised:
        tpufit.train_and_evaluate(
            tm, (X, Y), (XV, YV), max_steps=8, eval_every_steps=4, batch_size=16, verbose=0,
            exporters=[exporter],
        )  # fmt: skip
    assert "val_acc" in str(raised.value)
    assert tm.global_step == 4  # the first evaluation
    assert not os.path.exists(tmp_path) or steps_in(tmp_path) == []


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda p: tpufit.BestExporter(p, mode="lowest"), "mode"),
        (lambda p: tpufit.BestExporter(p, metric=3), "metric"),
        (lambda p: tpufit.LatestExporter(p, keep=0), "keep"),
        (lambda p: tpufit.LatestExporter(None), "path"),
    ],
)
def test_bad_exporter_arguments_name_the_argument(tmp_path, make, named):
    with pytest.raises(tpufit.TPUFitError, match=named):
        make(tmp_path)
