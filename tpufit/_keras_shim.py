"""The one place tpufit touches Keras internals (attributes with a leading `_`).

Keras's compiled metrics give `metrics=[...]` no sample weight at all, so a
padding row would count in them; and the per-output loss trackers of a
multi-output model weight every batch by its static size, padding included.
Exact evaluation of padded batches needs both fixed, and no public API reaches
them. Everything here is checked by `tests/test_keras_shim.py`, which fails
loudly if a Keras release moves these names.
"""

from __future__ import annotations

import keras
import tensorflow as tf

_UNSUPPORTED = (
    "tpufit relies on Keras 3 internals that this Keras version does not have "
    f"(keras=={keras.__version__}). Install a Keras version tpufit supports "
    "(keras>=3.10,<4)."
)


def _compile_metrics(model: keras.Model):
    try:
        return model._compile_metrics
    except AttributeError as error:
        raise RuntimeError(_UNSUPPORTED) from error


def compiled_metrics(model: keras.Model) -> list:
    """Returns the metrics given to `compile` (`metrics` and `weighted_metrics`), flattened.

    Each as given: a string, a function or a `keras.metrics.Metric`; `None`
    entries left out. An uncompiled model has none. Keras keeps them, before
    it wraps functions and resolves names, only in its compiled metrics.
    """
    compiled = _compile_metrics(model) if getattr(model, "compiled", False) else None
    if compiled is None:
        return []
    try:
        given = (compiled._user_metrics, compiled._user_weighted_metrics)
    except AttributeError as error:
        raise RuntimeError(_UNSUPPORTED) from error
    return [metric for metric in keras.tree.flatten(given) if metric is not None]


def update_compiled_metrics(model: keras.Model, y, y_pred, sample_weight, mask) -> None:
    """Updates the metrics given to `compile`, counting only real rows.

    Does what `keras.Model.compute_metrics` does for the compiled metrics, with
    one difference: `metrics=[...]` are weighted by `mask`, and
    `weighted_metrics=[...]` by `sample_weight * mask` (`sample_weight` already
    includes the mask when given), so padding rows count in neither.

    Args:
        model: A compiled Keras model.
        y: Targets, in the structure the model was compiled for.
        y_pred: The model's outputs.
        sample_weight: Per-row weights times the mask, or per-output weights.
        mask: 1-D float tensor, 1.0 for real rows.
    """
    compiled = _compile_metrics(model)
    if compiled is None:
        return
    if not compiled.built:
        compiled.build(y, y_pred)
    flat_y = compiled._flatten_y(y)
    flat_pred = compiled._flatten_y(y_pred)
    flat_weights = compiled._flatten_y(sample_weight)
    if len(flat_weights) < len(flat_y):
        flat_weights = [flat_weights[0]] * len(flat_y)
    for metric, y_t, y_p in zip(compiled._flat_metrics, flat_y, flat_pred, strict=False):
        if metric:
            metric.update_state(y_t, y_p, sample_weight=mask)
    for metric, y_t, y_p, weight in zip(
        compiled._flat_weighted_metrics, flat_y, flat_pred, flat_weights, strict=False
    ):
        if metric:
            metric.update_state(y_t, y_p, sample_weight=weight)


def output_loss_trackers(model: keras.Model) -> list[keras.metrics.Mean]:
    """Returns the per-output loss trackers of a multi-output model (maybe none).

    Keras weights each batch's update of these by the batch's static size, so
    after padded batches their `count` holds the padding rows too.
    """
    try:
        compile_loss = model._compile_loss
    except AttributeError as error:
        raise RuntimeError(_UNSUPPORTED) from error
    if compile_loss is None:
        return []
    return [m for m in compile_loss.metrics if isinstance(m, keras.metrics.Mean)]


def has_compiled_loss(model: keras.Model) -> bool:
    """Whether `compile` was given a `loss` (a model may train on `add_loss` terms alone)."""
    try:
        return model._compile_loss is not None
    except AttributeError as error:
        raise RuntimeError(_UNSUPPORTED) from error


def loss_tracker(model: keras.Model) -> keras.metrics.Mean:
    """Returns the `Mean` metric behind the `loss` entry of a compiled model's logs."""
    try:
        return model._loss_tracker
    except AttributeError as error:
        raise RuntimeError(_UNSUPPORTED) from error


def compile_arguments(model: keras.Model) -> dict | None:
    """Returns the keyword arguments `model` was compiled with, or `None` if it was not.

    Keras keeps them, as given, in `_compile_config` (its public
    `get_compile_config()` serializes them, losing the objects' identity).
    """
    if not getattr(model, "compiled", False):
        return None
    config = getattr(model, "_compile_config", None)
    if config is None:
        raise RuntimeError(_UNSUPPORTED)
    return dict(config.config)


def take_initial_epoch(model: keras.Model) -> int | None:
    """Returns (and clears) the epoch a callback asked `fit` to resume from.

    `keras.callbacks.BackupAndRestore` restores its backup in
    `on_train_begin` and leaves the epoch to resume from in the model's
    `_initial_epoch`, which Keras's `fit` reads right after. Cleared here so a
    later `fit` does not resume again.
    """
    epoch = getattr(model, "_initial_epoch", None)
    if epoch is not None:
        model._initial_epoch = None
    return epoch


def py_dataset_adapter(py_dataset, *, shuffle: bool):
    """Returns Keras's own adapter for a `keras.utils.PyDataset`.

    It runs the dataset's `workers` / `use_multiprocessing` / `max_queue_size`
    exactly as `keras.Model.fit` does; Keras has no public name for it. The
    adapter gives `on_epoch_begin()`, `get_numpy_iterator()` (one pass) and
    `on_epoch_end()`.
    """
    try:
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
    except ImportError as error:
        raise RuntimeError(_UNSUPPORTED) from error
    return PyDatasetAdapter(py_dataset, shuffle=shuffle)


def unbuilt_layers(model: keras.Model) -> bool:
    """Whether `model` or any layer inside it still waits to be built (Keras's own test)."""
    try:
        layers = model._flatten_layers()
    except AttributeError as error:
        raise RuntimeError(_UNSUPPORTED) from error
    return not all(layer.built for layer in layers)


def compute_output_spec(fn, *args, **kwargs):
    """Calls `fn` on symbolic tensors in a scratch graph, as Keras's trainer builds state.

    Variables `fn` creates are initialised when the call returns; updates
    of existing state (a metric's `update_state`, a counter's
    `assign_add`) are dropped. Arguments given as `tf.TensorSpec`s become
    `keras.KerasTensor`s.
    """
    try:
        from keras.src.backend import compute_output_spec as keras_compute_output_spec
    except ImportError as error:
        raise RuntimeError(_UNSUPPORTED) from error

    def symbolic(value):
        if isinstance(value, tf.TensorSpec):
            return keras.KerasTensor(tuple(value.shape.as_list()), value.dtype.name)
        if isinstance(value, tf.RaggedTensorSpec):  # As Keras's data adapters describe them.
            return keras.KerasTensor(
                tuple(value.shape.as_list()),
                value.dtype.name,
                ragged=True,
                ragged_rank=value.ragged_rank,
                row_splits_dtype=value.row_splits_dtype,
            )
        if isinstance(value, tf.SparseTensorSpec):
            return keras.KerasTensor(tuple(value.shape.as_list()), value.dtype.name, sparse=True)
        return value

    args, kwargs = keras.tree.map_structure(symbolic, (args, kwargs))
    return keras_compute_output_spec(fn, *args, **kwargs)


def keras_mask(tensor) -> tf.Tensor | None:
    """The mask Keras attached to an output (e.g. behind `Embedding(mask_zero=True)`), or `None`.

    Keras's compiled loss reads it from the output to weight timesteps; it has
    no public accessor.
    """
    return getattr(tensor, "_keras_mask", None)
