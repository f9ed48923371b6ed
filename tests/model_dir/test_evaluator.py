"""`tpufit.evaluate_checkpoints`: the evaluator job, in one process and beside a trainer process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import keras
import pytest
import tensorflow as tf
from conftest import (
    TESTS,
    compile_args,
    compiled,
    replicas,
    scalar_events,
    tiny_data,
    tiny_model,
)

import tpufit

X, Y = tiny_data(64)
XV, YV = tiny_data(40, seed=1)
VALUE = ".ATTRIBUTES/VARIABLE_VALUE"


def trainer(model_dir) -> tpufit.TPUModel:
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=4, model_dir=str(model_dir))
    tm.compile(**compile_args())
    return tm


def test_evaluates_the_newest_checkpoint_then_each_new_one_exactly(tmp_path):
    training = trainer(tmp_path)
    training.fit(X, Y, batch_size=16, max_steps=8, verbose=0)
    evaluator = compiled(tiny_model(seed=1))
    latest = tpufit.LatestExporter(tmp_path / "latest")
    results = tpufit.evaluate_checkpoints(
        evaluator, tmp_path, (XV, YV), timeout_secs=0, exporters=[latest]
    )
    first = next(results)
    expected = training.evaluate(XV, YV, verbose=0, return_dict=True)
    assert first == {"global_step": 8, **expected}
    assert evaluator.global_step == 8
    training.fit(X, Y, batch_size=16, max_steps=16, verbose=0)
    second = next(results)
    assert second == {"global_step": 16, **training.evaluate(XV, YV, verbose=0, return_dict=True)}
    assert list(results) == []  # no new checkpoint within timeout_secs: it ends
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["16", "8"]
    # One event file for the evaluator's evaluations, one for the training model's evaluates.
    assert len(tf.io.gfile.glob(str(tmp_path / "eval" / "events.out.tfevents.*"))) == 2
    assert scalar_events(tmp_path / "eval")["loss"] == {
        8: pytest.approx(first["loss"]),
        16: pytest.approx(second["loss"]),
    }


def test_until_step_ends_it_after_that_checkpoint(tmp_path):
    trainer(tmp_path).fit(X, Y, batch_size=16, max_steps=4, verbose=0)
    seen = list(tpufit.evaluate_checkpoints(compiled(), tmp_path, (XV, YV), until_step=4))
    assert [result["global_step"] for result in seen] == [4]


def test_no_checkpoint_within_the_timeout_ends_with_nothing_and_says_so(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = list(tpufit.evaluate_checkpoints(compiled(), tmp_path, (XV, YV), timeout_secs=0))
    assert seen == []
    assert any("no checkpoint appeared" in str(w.message) for w in caught)


def test_a_checkpoint_of_another_model_is_incompatible(tmp_path):
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    trained = tpufit.TPUModel(other, iterations_per_loop=4, model_dir=str(tmp_path))
    trained.compile(**compile_args())
    trained.fit(X, Y, batch_size=16, max_steps=4, verbose=0)
    results = tpufit.evaluate_checkpoints(compiled(), tmp_path, (XV, YV), timeout_secs=0)
    with pytest.raises(tpufit.IncompatibleCheckpointError, match="weights differ"):
        next(results)


def test_a_checkpoint_tpufit_did_not_write_is_incompatible_whatever_its_name(tmp_path):
    estimator_style = tf.train.Checkpoint(step=tf.Variable(100))
    tf.train.CheckpointManager(estimator_style, tmp_path, 3, checkpoint_name="model.ckpt").save(100)
    results = tpufit.evaluate_checkpoints(compiled(), tmp_path, (XV, YV), timeout_secs=0)
    with pytest.raises(tpufit.IncompatibleCheckpointError, match="not written by tpufit"):
        next(results)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"timeout_secs": -1}, "timeout_secs"),
        ({"until_step": 0}, "until_step"),
        ({"steps": "all"}, "steps"),
        ({"exporters": "serving/"}, "exporters"),
    ],
)
def test_bad_arguments_fail_at_the_call(tmp_path, kwargs, named):
    with pytest.raises(tpufit.TPUFitError, match=named):
        tpufit.evaluate_checkpoints(compiled(), tmp_path, (XV, YV), **kwargs)


def test_a_model_dir_that_is_not_a_path_is_refused_naming_it():
    with pytest.raises(tpufit.InvalidTypeError, match="model_dir"):
        tpufit.evaluate_checkpoints(compiled(), 3, (XV, YV))


def test_an_exporter_metric_the_evaluation_lacks_fails_at_the_first_evaluation(tmp_path):
    trainer(tmp_path).fit(X, Y, batch_size=16, max_steps=4, verbose=0)
    exporter = tpufit.BestExporter(tmp_path / "best", metric="val_acc")
    results = tpufit.evaluate_checkpoints(
        compiled(), tmp_path, (XV, YV), timeout_secs=0, exporters=[exporter]
    )
    with pytest.raises(tpufit.InvalidArgumentError, match="'accuracy', 'loss'") as raised:
        next(results)
    assert "val_acc" in str(raised.value)
    assert not (tmp_path / "best").exists()


def test_arrays_must_come_as_a_pair(tmp_path):
    with pytest.raises(tpufit.InvalidArgumentError, match="data"):
        tpufit.evaluate_checkpoints(compiled(), tmp_path, XV)


def check_each_checkpoint_seen(model_dir, seen: list[dict], *, rel: float) -> list[int]:
    """Checks an evaluator's results: each new checkpoint to the last, each as `evaluate` gives.

    Returns:
        The global steps of the checkpoints it evaluated.
    """
    import evaluator_child

    steps = [result.pop("global_step") for result in seen]
    assert steps[-1] == evaluator_child.LAST_STEP
    assert steps == sorted(set(steps))
    tm = compiled(tiny_model(seed=2))
    for step, metrics in zip(steps, seen, strict=True):
        reader = tf.train.load_checkpoint(str(model_dir / f"ckpt-{step}"))
        count = len(tm.model.weights)
        tm.model.set_weights([reader.get_tensor(f"weights/{i}/{VALUE}") for i in range(count)])
        afterwards = tm.evaluate(XV, YV, verbose=0, return_dict=True)
        assert metrics == pytest.approx(afterwards, rel=rel), step
    return steps


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_evaluator_process_beside_a_training_process(tmp_path):
    sys.path.insert(0, str(TESTS))

    model_dir, out = tmp_path / "run", tmp_path / "seen.json"
    child = [sys.executable, str(TESTS / "evaluator_child.py")]
    evaluator = subprocess.Popen([*child, "evaluate", str(model_dir), str(out)])
    training = subprocess.Popen([*child, "train", str(model_dir)])
    assert training.wait(timeout=120) == 0
    assert evaluator.wait(timeout=120) == 0  # it ends by itself, after the last step
    check_each_checkpoint_seen(model_dir, json.loads(out.read_text()), rel=0)


def test_a_keras_model_is_refused_naming_the_argument(tmp_path):
    with pytest.raises(tpufit.InvalidTypeError, match="TPUModel"):
        tpufit.evaluate_checkpoints(tiny_model(), tmp_path, (XV, YV))


def evaluator_workers(tmp_path, mode: str) -> tuple[list[int], list[str]]:
    """Runs a training process and a two-worker evaluator (`evaluator_child.py MODE`) to the end."""
    from test_multi_worker import finish, free_ports

    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    child = [sys.executable, str(TESTS / "evaluator_child.py")]
    evaluators = []
    for index in range(2):
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config))
        env.pop("TPUFIT_TEST_REPLICAS", None)
        out = tmp_path / f"worker{index}.json"
        evaluators.append(
            subprocess.Popen([*child, mode, str(tmp_path / "run"), str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )  # fmt: skip
    training = subprocess.Popen([*child, "train", str(tmp_path / "run")])
    assert training.wait(timeout=120) == 0
    outputs = finish(evaluators, timeout=120)  # they end by themselves, never hang
    return [e.returncode for e in evaluators], outputs


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(replicas() > 1, reason="runs in the one-device parent process")
def test_an_evaluator_of_two_workers_beside_a_training_process(tmp_path):
    sys.path.insert(0, str(TESTS))

    model_dir = tmp_path / "run"
    codes, outputs = evaluator_workers(tmp_path, "evaluate-worker")
    assert codes == [0, 0], [o[-3000:] for o in outputs]
    reports = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    assert [report["is_chief"] for report in reports] == [True, False]
    # Both workers evaluated the same checkpoints together, and got the global metrics.
    assert reports[0]["seen"] == reports[1]["seen"]
    steps = check_each_checkpoint_seen(model_dir, reports[0]["seen"], rel=1e-6)
    # Only the chief wrote: one eval event file, one export per evaluation.
    assert len(tf.io.gfile.glob(str(model_dir / "eval" / "events.out.tfevents.*"))) == 1
    assert sorted(scalar_events(model_dir / "eval")["loss"]) == steps
    assert sorted(int(p.name) for p in (model_dir / "latest").iterdir()) == steps


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(replicas() > 1, reason="runs in the one-device parent process")
def test_a_lost_evaluator_worker_is_named_by_the_other_not_a_hang(tmp_path):
    codes, outputs = evaluator_workers(tmp_path, "evaluate-worker-dies")
    assert codes == [0, 3], [o[-3000:] for o in outputs]
    seen = json.loads((tmp_path / "worker0.json").read_text())["seen"]
    assert "global_step" in seen[0]
    assert "worker 1 (127.0.0.1:" in seen[-1]["error"]
    assert "evaluate_checkpoints" in seen[-1]["error"]
