"""SavedModel export for serving: `TPUModel.export`.

The exported `serving_default` signature takes a batch of any size (0, 1, or
more than the training batch) and returns what `TPUModel.predict` returns for
it, bit for bit. It computes the way `predict` does: the rows are cut into
static batches of `batch_size` (the last one padded), each batch goes through
the model's `predict_step` — XLA-compiled exactly when `predict`'s step is, as
the predict program decided it (`Replicas.predict_jit_compile`) — and the
padding rows are dropped. (XLA's kernels, hence its roundings, depend on the
batch shape, so a step traced for one request size would not equal `predict`
at another.) The artifact is written by `keras.export.ExportArchive` and needs
only TensorFlow to load: `tf.saved_model.load(path).signatures["serving_default"]`.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import tensorflow as tf

from tpufit import errors
from tpufit.device.replicas import Replicas


def input_signature(model: keras.Model, seen_spec: Any) -> Any:
    """Returns the inputs' `tf.TensorSpec` structure with an unknown batch dimension.

    A functional model's inputs name the signature's arguments; other models
    take the structure of the inputs tpufit last fed them (`seen_spec`).

    Raises:
        InvalidArgumentError: Neither is known (a subclassed model never run).
    """
    inputs = None
    try:
        inputs = model.input  # The structure a functional model was built with.
    except (AttributeError, ValueError):
        try:
            inputs = model.inputs  # A Sequential model knows only the flat list.
            inputs = inputs[0] if inputs and len(inputs) == 1 else inputs
        except (AttributeError, ValueError):
            pass
    if inputs is not None:
        return tf.nest.map_structure(
            lambda t: tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name), inputs
        )
    if seen_spec is None:
        raise errors.invalid_argument(
            "model",
            type(model).__name__,
            "a model with known inputs: a functional model, or one that ran "
            "`fit`, `evaluate` or `predict` once (its inputs' shapes come from that data)",
            what="Cannot export: the model's inputs are unknown",
        )
    return tf.nest.map_structure(lambda s: tf.TensorSpec((None, *s.shape[1:]), s.dtype), seen_spec)


def batch_spec(spec: Any, batch_size: int) -> Any:
    """Returns `spec` with its batch dimension set to `batch_size`."""
    return tf.nest.map_structure(lambda s: tf.TensorSpec((batch_size, *s.shape[1:]), s.dtype), spec)


def _pad_to(tensor: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    padding = [[0, rows - tf.shape(tensor)[0]]] + [[0, 0]] * (tensor.shape.rank - 1)
    return tf.pad(tensor, padding)


def serving_function(model: keras.Model, spec: Any, batch_size: int, use_xla: bool):
    """Returns `serve(*inputs) -> outputs`, computing in static batches of `batch_size` rows.

    Args:
        model: The user's Keras model, holding the current weights.
        spec: The inputs' structure of `tf.TensorSpec`s (batch dimension `None`).
        batch_size: Rows of each static batch.
        use_xla: Whether the step is XLA-compiled: as `predict`'s step is
            (`Replicas.predict_jit_compile`).
    """
    several = isinstance(spec, (tuple, list))
    element = batch_spec(spec, batch_size)

    def predict_step(x):
        # Packed as the infeed packs it: several inputs go in a 1-tuple.
        return model.predict_step((x,) if several else x)

    step = tf.function(predict_step, jit_compile=use_xla)
    out_spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec(t.shape, t.dtype),
        step.get_concrete_function(element).structured_outputs,
    )

    def serve(*args):
        inputs = args[0] if len(args) == 1 else tuple(args)
        rows = tf.shape(tf.nest.flatten(inputs)[0])[0]
        batches = (rows + batch_size - 1) // batch_size

        def in_batches(t):
            t = _pad_to(t, batches * batch_size)
            return tf.reshape(t, tf.concat([[batches, batch_size], tf.shape(t)[1:]], 0))

        outputs = tf.map_fn(
            step,
            tf.nest.map_structure(in_batches, inputs),
            fn_output_signature=out_spec,
            parallel_iterations=1,
        )
        return tf.nest.map_structure(
            lambda t: tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))[:rows], outputs
        )

    return serve


def write(
    path: str | os.PathLike, replicas: Replicas, batch_size: int, jit_compile: bool | str
) -> None:
    """Writes the SavedModel of the user's model at `path` (see the module's docstring).

    Args:
        path: The SavedModel directory.
        replicas: The model as the strategy runs it: its `user_model` is
            exported (holding the current weights), its `input_spec` gives
            the inputs of a model without `keras.Input`s, its predict
            program decides XLA.
        batch_size: Rows of each static batch.
        jit_compile: As `RunConfig.jit_compile`.

    Raises:
        InvalidArgumentError: The model's inputs are unknown, or
            `jit_compile=True` and XLA cannot compile the predict step.
    """
    model = replicas.user_model
    spec = input_signature(model, replicas.input_spec)
    use_xla = replicas.predict_jit_compile(batch_spec(spec, batch_size), jit_compile)
    args = list(spec) if isinstance(spec, (tuple, list)) else [spec]
    archive = keras.export.ExportArchive()
    archive.track(model)
    serve = serving_function(model, spec, batch_size, use_xla)
    archive.add_endpoint("serve", serve, input_signature=args)
    archive.write_out(os.fspath(path), verbose=False)
