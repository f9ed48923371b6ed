"""Which layout a run's batches take: padded where padding rows are provably invisible.

tpufit's masked copies of Keras's steps (`steps.py`) weight padding rows by 0
in the compiled loss and metrics, and nowhere else. So a padded partial batch
gives Keras's result only when nothing else sees the batch: every layer
computes each row from that row alone (no batch statistics, no random draws
for the padded shape, no batch-dependent `add_loss`, no mask reaching a
per-timestep loss), and the loss and metrics are Keras built-ins that weight
one value per row. `choose_layout` proves this from the model's structure,
and otherwise runs the partial last batch at its true size through Keras's
own step, which is exact by construction. Prediction always pads: its rows
are independent, and the host drops the padding rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from tpufit import _keras_shim
from tpufit.config import Layout, Mode
from tpufit.device import steps as step_fns


@dataclasses.dataclass(frozen=True)
class LayoutChoice:
    """A mode's layout and the one reason that decided it.

    Attributes:
        layout: `Layout.PADDED` or `Layout.TRUE_SIZE`.
        reason: One sentence naming what decided it, e.g. "layer
            'batch_normalization' (BatchNormalization) mixes rows in training".
    """

    layout: Layout
    reason: str


def _layer_classes(*names: str) -> tuple[type, ...]:
    # Looked up by name so that a layer a Keras release lacks is simply not listed.
    return tuple(getattr(keras.layers, name) for name in names if hasattr(keras.layers, name))


# Keras layers that compute each row from that row alone, in training and inference.
_ROW_WISE = _layer_classes(
    "InputLayer", "Dense", "EinsumDense", "Identity", "Activation", "ReLU", "LeakyReLU",
    "PReLU", "ELU", "Softmax", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose",
    "Conv2DTranspose", "Conv3DTranspose", "SeparableConv1D", "SeparableConv2D",
    "DepthwiseConv1D", "DepthwiseConv2D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Flatten", "Reshape",
    "Permute", "RepeatVector", "Embedding", "LayerNormalization", "UnitNormalization",
    "GroupNormalization", "RMSNormalization", "Add", "Subtract", "Multiply", "Average",
    "Maximum", "Minimum", "Concatenate", "Dot", "Cropping1D", "Cropping2D", "Cropping3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "UpSampling1D", "UpSampling2D",
    "UpSampling3D", "Rescaling", "Resizing", "CenterCrop", "Normalization",
    "CategoryEncoding", "Hashing", "StringLookup", "IntegerLookup", "Discretization",
)  # fmt: skip
# Row-wise in inference only: in training they use the batch's statistics ...
_BATCH_STATISTICS = _layer_classes("BatchNormalization")
# ... or draw random numbers for the batch's shape, so padding changes even the real rows'.
_RANDOM_IN_TRAINING = _layer_classes(
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "AugMix", "RandAugment", "CutMix", "MixUp",
    "Solarization", *(name for name in dir(keras.layers) if name.startswith("Random")),
)  # fmt: skip
_RNN_CELLS = _layer_classes("SimpleRNNCell", "GRUCell", "LSTMCell")
# Layers that attach a mask to their output: the loss then weights timesteps, not rows.
_MASK_MAKERS = _layer_classes("Masking")


def choose_layout(model: keras.Model, mode: Mode, setting: str = "auto") -> LayoutChoice:
    """Chooses the layout of `mode`'s batches for `model`.

    Args:
        model: The compiled Keras model the steps run (the replicas' copy).
        mode: `Mode.TRAIN`, `Mode.EVAL` or `Mode.PREDICT`.
        setting: `RunConfig.partial_batch`: `"auto"` pads only where padding
            rows are provably invisible; `"pad"` pads every model on Keras's
            own steps; `"true_size"` never pads in training or evaluation.

    Returns:
        The `LayoutChoice`: the layout and the reason for it.

    Example:
        >>> choose_layout(mlp, Mode.TRAIN)
        LayoutChoice(layout=<Layout.PADDED: 'padded'>, reason='every layer is row-wise ...')
    """
    if mode == Mode.PREDICT:
        return LayoutChoice(
            Layout.PADDED, "prediction rows are independent; padding rows are dropped"
        )
    if not step_fns.uses_keras_steps(model, mode):
        return LayoutChoice(Layout.TRUE_SIZE, _unmaskable(model))
    if setting == "pad":
        return LayoutChoice(
            Layout.PADDED, "partial_batch='pad' pads the partial last batch (a single shape)"
        )
    if setting == "true_size":
        return LayoutChoice(
            Layout.TRUE_SIZE, "partial_batch='true_size' runs the partial last batch at its size"
        )
    reason = _layers_reason(model, mode) or _loss_reason(model) or _metrics_reason(model)
    if reason is not None:
        return LayoutChoice(Layout.TRUE_SIZE, reason)
    return LayoutChoice(
        Layout.PADDED, "every layer is row-wise and the loss and metrics weight rows"
    )


def _unmaskable(model: keras.Model) -> str:
    for loss in _compiled_losses(model):
        reduction = getattr(loss, "reduction", None)
        if reduction is not None and reduction not in step_fns.MEAN_REDUCTIONS:
            return f"loss {_name(loss)} reduces by {reduction!r}, which padding rows would change"
    return "the model has its own train_step/test_step"


def _describe(layer: keras.layers.Layer) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _keras_own(function: Any) -> bool:
    return getattr(function, "__module__", "").startswith("keras.")


def _layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """`layer` and every layer inside it: a functional or Sequential model's, a wrapper's."""
    yield layer
    inner: list = []
    if isinstance(layer, keras.Model) and _keras_own(type(layer).call):
        inner = layer.layers
    elif isinstance(layer, keras.layers.Bidirectional):
        inner = [layer.forward_layer, layer.backward_layer]
    for child in inner:
        yield from _layers(child)


def _layers_reason(model: keras.Model, mode: Mode) -> str | None:
    for layer in _layers(model):
        reason = _layer_reason(layer, mode)
        if reason is not None:
            return reason
    return None


def _layer_reason(layer: keras.layers.Layer, mode: Mode) -> str | None:
    """Why `layer` may let padding rows change a result in `mode`, or `None` if it cannot."""
    if getattr(layer, "activity_regularizer", None) is not None:
        return f"{_describe(layer)} has an activity_regularizer, a loss over the whole batch"
    if isinstance(layer, _MASK_MAKERS) or getattr(layer, "mask_zero", False):
        return f"{_describe(layer)} makes a mask, so the loss weights timesteps, not rows"
    if not _keras_own(type(layer).call):
        return f"{_describe(layer)} has its own call, which may mix rows"
    training = mode == Mode.TRAIN
    if isinstance(layer, _BATCH_STATISTICS):
        return f"{_describe(layer)} mixes rows in training" if training else None
    if isinstance(layer, _RANDOM_IN_TRAINING):
        return f"{_describe(layer)} draws random numbers in training" if training else None
    if isinstance(layer, keras.Model | keras.layers.Bidirectional):
        return None  # A container: `_layers` walks what it holds.
    if isinstance(layer, keras.layers.RNN):
        return _rnn_reason(layer, training)
    if isinstance(layer, _ROW_WISE):
        return None
    return f"{_describe(layer)} is not a Keras layer known to compute each row from that row alone"


def _rnn_reason(layer: keras.layers.RNN, training: bool) -> str | None:
    cells = getattr(layer.cell, "cells", [layer.cell])  # StackedRNNCells holds several.
    for cell in cells:
        if not isinstance(cell, _RNN_CELLS) or not _keras_own(type(cell).call):
            return f"{_describe(layer)} runs cell {type(cell).__name__}, not a Keras built-in"
        if training and (cell.dropout or cell.recurrent_dropout):
            return f"{_describe(layer)} draws dropout masks in training"
    return None


def _name(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    return repr(getattr(value, "name", None) or getattr(value, "__name__", type(value).__name__))


def _compiled_losses(model: keras.Model) -> list:
    return [loss for loss in tf.nest.flatten(getattr(model, "loss", None)) if loss is not None]


def _loss_reason(model: keras.Model) -> str | None:
    losses = _compiled_losses(model)
    for loss in losses:
        if isinstance(loss, str):
            loss = keras.losses.get(loss)
        if isinstance(loss, keras.losses.Loss):
            # A built-in class wrapping a user's function (`LossFunctionWrapper`) is the user's.
            fn = getattr(loss, "fn", None)
            if not _keras_own(type(loss)) or fn is not None and not _keras_own(fn):
                return f"loss {_name(loss)} is not a Keras built-in that weights rows"
        elif not _keras_own(loss):
            return f"loss {_name(loss)} is not a Keras built-in that weights rows"
    if losses or _keras_shim.compiled_metrics(model):
        return _outputs_reason(model)
    return None


def _outputs_reason(model: keras.Model) -> str | None:
    """Why the loss and metrics may not give one value per row, or `None` if they do."""
    try:
        outputs = tf.nest.flatten(model.outputs)
    except (AttributeError, ValueError):
        return "the model's outputs are not known before it runs, so neither is their rank"
    for output in outputs:
        rank = len(output.shape)
        if rank != 2:
            # Keras's losses reduce the last axis: rank 2 leaves one value per row; rank 1
            # one value per batch; a higher rank one per row and position, which a row mask
            # does not weight as Keras's loss weights them.
            return f"output {output.name!r} has rank {rank}, so the loss is not one value per row"
    return None


def _metrics_reason(model: keras.Model) -> str | None:
    for metric in _keras_shim.compiled_metrics(model):
        if isinstance(metric, str):
            try:
                metric = keras.metrics.get(metric)
            except ValueError:
                continue  # A name Keras's compile resolves itself ("acc", "crossentropy").
        builtin = (
            _keras_own(type(metric)) and type(metric) is not keras.metrics.MeanMetricWrapper
            if isinstance(metric, keras.metrics.Metric)
            else _keras_own(metric)
        )
        if not builtin:
            return f"metric {_name(metric)} is not a Keras built-in that weights rows"
    return None
