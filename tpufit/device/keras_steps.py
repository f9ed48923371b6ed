"""tpufit's copies of Keras's own `train_step` and `test_step`, run at true size.

Keras's steps are exact on one device, but two things need a copy: the NaN
guard (`finite.apply_if_finite` applies an update only if the loss and every
gradient are finite, which Keras's step cannot be asked to do), and several
replicas, where Keras gives each replica's mean loss `1 / replicas` of the step
however many rows a partial batch left it; the copies count each replica by
its share of the step's rows instead (`split_exactly`), as one device does.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tpufit import _keras_shim
from tpufit.device.finite import apply_if_finite, snapshot
from tpufit.device.step_parts import (
    HostCalls,
    StepTensors,
    additional_losses,
    batch_rows,
    call_compute_loss,
    host_call_values,
    summed_over_replicas,
    timestep_mask,
    unscaled_for_distribution,
)


def split_exactly(model: keras.Model, loss, y_pred, rows) -> tuple[tf.Tensor, tf.Tensor, Any]:
    """Reweights a true-size step's loss so that the replicas add up to one device's batch.

    Keras's steps give each replica's mean loss `1 / replicas` of the step,
    however many rows it holds: a partial batch split unevenly over the
    replicas then counts some rows more than others. Here each replica's loss
    is weighted by its share of the step's rows (summed over the replicas). The
    data loss of a single masked output is weighted by the replica's share of
    the unmasked timesteps instead (Keras's denominator; summed over the
    replicas by a collective, which no loop wraps in a `cond`), its additional
    losses (activity regularizers, `add_loss`: per-row means in Keras) staying
    weighted by rows. Full, evenly split batches of unmasked outputs keep
    weight 1.

    Returns:
        `(loss, tracked, count)`: the replica's weighted share of the step's
        loss, and the value and weight for the loss tracker, so that the
        replicas' updates make the whole step's mean.
    """
    dtype = loss.dtype
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    # Summed over the replicas, not read from the signals: an `input_fn`'s pipeline of each
    # replica counts only its own rows.
    total_rows = summed_over_replicas(tf.cast(rows, tf.float32))
    row_share = tf.cast(
        tf.math.divide_no_nan(tf.cast(rows, tf.float32) * replicas, total_rows), dtype
    )
    weighted = loss * row_share
    mask = timestep_mask(y_pred)
    if mask is not None:
        unmasked = tf.reduce_sum(mask)
        all_unmasked = summed_over_replicas(unmasked)
        mask_share = tf.cast(tf.math.divide_no_nan(unmasked * replicas, all_unmasked), dtype)
        additional = additional_losses(model)
        weighted = (loss - additional) * mask_share + additional * row_share
    # Counted by its rows, each replica's tracked value times its count is its weighted loss
    # times the step's rows; a replica with no rows (a short batch split over more replicas
    # than it has rows) adds nothing.
    rows = tf.cast(rows, dtype)
    return weighted, tf.math.divide_no_nan(weighted * tf.cast(total_rows, dtype), rows), rows


def keras_loss(model: keras.Model, x, y, y_pred, sample_weight, *, training, split):
    """Keras's `compute_loss` and loss-tracker update; `split` reweights it (`split_exactly`)."""
    loss = call_compute_loss(model, x, y, y_pred, sample_weight, training=training)
    rows = batch_rows(x)
    if split:
        loss, tracked, count = split_exactly(model, loss, y_pred, rows)
    else:
        tracked, count = unscaled_for_distribution(loss), rows
    _keras_shim.loss_tracker(model).update_state(tracked, sample_weight=count)
    return loss


def keras_train_step(
    model: keras.Model,
    data,
    host_calls: HostCalls | None = None,
    *,
    guard: bool,
    split: bool,
):
    """Keras's own `train_step` at true size, guarded and split over replicas as asked.

    It does what `keras.Model.train_step` does, except that with `guard` the
    gradients are applied only where `apply_if_finite` finds the loss and
    gradients finite (a withheld step changes nothing), and with `split` each
    replica's loss counts by its share of the step (`split_exactly`). Its
    step loss is the step's own (Keras's step logs only the running mean).
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    before = snapshot(model) if guard else None
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = keras_loss(model, x, y, y_pred, sample_weight, training=True, split=split)
        scaled = model.optimizer.scale_loss(loss)
    variables = model.trainable_weights
    gradients = tape.gradient(scaled, variables) if variables else []
    if guard:
        # Keras updates the metrics after the weights (they do not depend on each other):
        # here before, so that a withheld step restores them with the rest.
        model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        applied = apply_if_finite(model, loss, gradients, before)
        with tf.control_dependencies([applied]):  # the logs after a restore
            logs = model.get_metrics_result()
        non_finite = tf.logical_not(applied)
    else:
        if variables:  # As Keras's step: nothing to apply (`Engine.fit` warned).
            model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        non_finite = tf.constant(False)
    extras = host_call_values(host_calls or {}, StepTensors(model, data, logs, gradients))
    return logs, tf.cast(loss, tf.float32), tf.constant(0.0), extras, non_finite


def keras_test_step(model: keras.Model, data, host_calls: HostCalls | None = None):
    """Keras's own `test_step` at true size, each replica's loss counted by its share of rows."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=False)
    loss = keras_loss(model, x, y, y_pred, sample_weight, training=False, split=True)
    logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    extras = host_call_values(host_calls or {}, StepTensors(model, data, logs, None))
    return logs, tf.cast(loss, tf.float32), tf.constant(0.0), extras, tf.constant(False)
