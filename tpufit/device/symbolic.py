"""Building a model's lazy state from the specs of a batch, as Keras's trainer does."""

from __future__ import annotations

import keras
import tensorflow as tf

from tpufit import _keras_shim
from tpufit.device.step_parts import call_compute_loss


def has_call(model: keras.Model) -> bool:
    """Whether `model` can be called: a keras.io GAN defines only `compile` and `train_step`."""
    return type(model).call is not keras.Model.call


def build_symbolically(model: keras.Model, data_spec, *, build_model: bool, build_compiled: bool):
    """Creates `model`'s lazily built state from the specs of a batch, as Keras's trainer does.

    The model (and, with `build_compiled`, its compiled loss and metrics) runs
    on symbolic tensors in a scratch graph: layers, metrics and loss trackers
    get their variables, and nothing runs on data, so no state changes (a
    layer counting its calls in a variable counts none). `model` is the
    replicas' copy; call this under the strategy's scope.

    Args:
        model: The model, callable (see `has_call`).
        data_spec: The `tf.TensorSpec` structure of one element `(x, y, sample_weight)`.
        build_model: Whether layers still wait to be built.
        build_compiled: Whether to build the compiled loss and metrics.
    """
    if not (build_model or build_compiled):
        return
    # An optional input left out is None in the data, as Keras passes it to the model.
    data_spec = tf.nest.map_structure(
        lambda spec: None if isinstance(spec, tf.NoneTensorSpec) else spec, data_spec
    )
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data_spec)
    y_pred = _keras_shim.compute_output_spec(model, x, training=False)
    if build_compiled:
        # As Keras's steps call them: a row mask as the weight would not broadcast
        # against per-timestep losses or per-batch metrics.
        _keras_shim.compute_output_spec(
            model.compute_metrics, x, y, y_pred, sample_weight=sample_weight
        )
        if not _keras_shim.has_compiled_loss(model):
            return
        _keras_shim.compute_output_spec(
            lambda *args: call_compute_loss(model, *args, training=False),
            x,
            y,
            y_pred,
            sample_weight,
        )
