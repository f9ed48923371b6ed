"""The Keras internals tpufit relies on still exist and behave as it expects.

If a Keras release moves them, these tests fail first, with the name that moved.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from conftest import tiny_data, tiny_model

from tpufit import _keras_shim


def compiled_two_outputs() -> keras.Model:
    inputs = keras.Input((4,))
    model = keras.Model(
        inputs,
        {
            "a": keras.layers.Dense(2, name="a")(inputs),
            "b": keras.layers.Dense(1, name="b")(inputs),
        },
    )
    model.compile(
        optimizer="sgd",
        loss={"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "b": "mse"},
        metrics={"a": ["accuracy"], "b": ["mae"]},
        weighted_metrics={"a": ["accuracy"]},
    )
    return model


def test_masked_rows_count_in_neither_metrics_nor_weighted_metrics():
    model = tiny_model()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"], weighted_metrics=["mse"])
    y = tf.constant([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    y_pred = tf.zeros((3, 3))
    mask = tf.constant([1.0, 1.0, 0.0])
    _keras_shim.update_compiled_metrics(model, y, y_pred, mask, mask)
    results = model.get_metrics_result()
    assert float(results["mae"]) == 0.0
    assert float(results["mse"]) == 0.0


def test_per_output_loss_trackers_count_every_row_of_a_static_batch():
    # tpufit takes padding rows back out of `count`, so it must count rows.
    model = compiled_two_outputs()
    x = tf.zeros((5, 4))
    y = {"a": tf.zeros(5), "b": tf.zeros((5, 1))}
    tf.function(lambda: model.compute_loss(x=x, y=y, y_pred=model(x)))()
    trackers = _keras_shim.output_loss_trackers(model)
    assert sorted(t.name for t in trackers) == ["a_loss", "b_loss"]
    assert all(float(t.count) == 5.0 for t in trackers)
    assert all(float(t.total) >= 0.0 for t in trackers)


def test_loss_tracker_is_the_loss_entry_of_the_logs():
    model = tiny_model()
    model.compile(optimizer="sgd", loss="mse")
    tracker = _keras_shim.loss_tracker(model)
    tracker.update_state(3.0)
    assert float(model.get_metrics_result()["loss"]) == 3.0


def test_backup_and_restore_leaves_the_epoch_to_resume_from_where_the_shim_reads_it(tmp_path):
    model = tiny_model()
    model.compile(optimizer="sgd", loss="mse")
    backup = keras.callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False)
    x, y = tiny_data(8)
    model.fit(x, np.eye(3)[y], epochs=2, verbose=0, callbacks=[backup])
    fresh = tiny_model()
    fresh.compile(optimizer="sgd", loss="mse")
    backup.set_model(fresh)
    backup.on_train_begin()
    assert _keras_shim.take_initial_epoch(fresh) == 2
    assert _keras_shim.take_initial_epoch(fresh) is None


def test_py_dataset_adapter_runs_a_pass_with_keras_workers():
    class Ones(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return (tf.ones([2, 1]) * index).numpy()

    adapter = _keras_shim.py_dataset_adapter(Ones(workers=2), shuffle=False)
    adapter.on_epoch_begin()
    batches = list(adapter.get_numpy_iterator())
    adapter.on_epoch_end()
    assert [float(b[0][0, 0]) for b in batches] == [0.0, 1.0, 2.0, 3.0]


def test_compiled_metrics_are_the_metrics_given_to_compile_as_given():
    def spread(y_true, y_pred):
        return keras.ops.std(y_pred)

    auc = keras.metrics.AUC()
    model = compiled_two_outputs()
    assert _keras_shim.compiled_metrics(model) == ["accuracy", "mae", "accuracy"]
    model = tiny_model()
    assert _keras_shim.compiled_metrics(model) == []
    model.compile(optimizer="sgd", loss="mse", metrics=[spread, None], weighted_metrics=[auc])
    assert _keras_shim.compiled_metrics(model) == [spread, auc]


def test_state_is_built_symbolically_from_ragged_and_sparse_specs():
    dense = keras.layers.Dense(3)
    ragged = tf.RaggedTensorSpec((None, None, 2), tf.float32)
    out = _keras_shim.compute_output_spec(lambda x: keras.ops.sum(x, axis=1), ragged)
    assert out.shape == (None, 2)
    out = _keras_shim.compute_output_spec(dense, tf.SparseTensorSpec((None, 4), tf.float32))
    assert out.shape == (None, 3) and dense.built
