"""What every replica step is made of: its tensors for `host_call`, and Keras's loss pieces.

Shared by tpufit's padded steps (`steps.py`), its copies of Keras's steps at
true size (`keras_steps.py`) and symbolic state building (`symbolic.py`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tpufit import _keras_shim


@dataclasses.dataclass
class StepTensors:
    """What a `host_call` function sees inside one step, on one replica.

    Attributes:
        model: The Keras model the step runs: the replicas' copy
            (`Replicas.replica_model`), which is a clone of the user's model
            when that was built outside the strategy's scope.
        data: The step's batch as the input yields it.
        logs: The step's logs (tensors).
        gradients: The step's gradients, one per trainable weight, in
            tpufit's own training steps; `None` in eval and in a model's own
            `train_step`.
    """

    model: keras.Model
    data: Any
    logs: dict[str, Any]
    gradients: list[Any] | None


HostCalls = dict[str, Callable[[StepTensors], tf.Tensor]]


def host_call_values(host_calls: HostCalls, tensors: StepTensors) -> dict[str, tf.Tensor]:
    """Runs the hooks' `host_call` functions on one step's tensors, as float32."""
    return {name: tf.cast(fn(tensors), tf.float32) for name, fn in host_calls.items()}


def call_compute_loss(model, x, y, y_pred, sample_weight, training):
    """Calls `model.compute_loss`; like Keras, leaves out `training` if an override lacks it."""
    if "training" in inspect.signature(model.compute_loss).parameters:
        return model.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
    return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)


def additional_losses(model: keras.Model) -> tf.Tensor:
    """The model's `losses` (regularizers, `add_loss`), summed as `compute_loss` adds them.

    Keras's TF trainer scales them by `1 / replicas`, like the compiled loss,
    so that the replicas' gradients add up to one device's; this is that
    replica's share.
    """
    losses = model.losses
    if not losses:
        return tf.constant(0.0, keras.config.floatx())
    total = tf.add_n([tf.reduce_sum(tf.cast(loss, keras.config.floatx())) for loss in losses])
    return total / tf.distribute.get_strategy().num_replicas_in_sync


def global_signals(signals):
    """Returns `signals` whose `real_rows` counts the step's real rows on every worker.

    On one worker the infeed already counts the whole step. Under a
    `MultiWorkerMirroredStrategy`, an `input_fn`'s pipelines count only their
    own rows, so the count is summed over the replicas (a collective: the
    multi-worker loops have no conditional around the step).
    """
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return signals
    context = tf.distribute.get_replica_context()
    real_rows = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(signals["mask"]))
    return dict(signals, real_rows=tf.fill(tf.shape(signals["mask"]), real_rows))


def unscaled_for_distribution(loss: tf.Tensor) -> tf.Tensor:
    """As Keras's `unscale_loss_for_distribution`: the replica's share times the replicas."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def batch_rows(x) -> tf.Tensor:
    """The rows of a batch's `x`: of its first input that is not `None`, as Keras counts them."""
    return tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]


def timestep_mask(y_pred) -> tf.Tensor | None:
    """The mask Keras's compiled loss weights a single output by (as float32), or `None`.

    Behind `Embedding(mask_zero=True)` or `Masking`, Keras's mean losses
    divide by the output's unmasked timesteps, not by its rows. Several
    outputs keep their row counts (their masks are not combined here).
    """
    outputs = tf.nest.flatten(y_pred)
    mask = _keras_shim.keras_mask(outputs[0]) if len(outputs) == 1 else None
    return None if mask is None else tf.cast(mask, tf.float32)


def summed_over_replicas(value: tf.Tensor) -> tf.Tensor:
    """`value` summed over the replicas (a collective: no loop runs its step inside a `cond`)."""
    context = tf.distribute.get_replica_context()
    if context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
