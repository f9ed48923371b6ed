"""What one replica does in one step, for each mode.

Every function here takes the model the step runs: the replicas' copy
(`Replicas.replica_model`), never the user's model when that was cloned.

A model that keeps Keras's own `train_step` / `test_step` (and `compute_loss`,
`compute_metrics`) gets tpufit's *padded* steps (`Layout.PADDED`): they do what
Keras's steps do, but count only the real rows of a padded batch, so that the
padded last batch gives exactly what Keras gives on the unpadded one. A model
that overrides a step gets its own step (`Layout.TRUE_SIZE`), called with
`data` exactly as the input yields it; its partial last batch runs at its true
size instead (see `infeed.py`). So does a model on Keras's own steps whose
padding rows would show (`layout.py`): on several replicas it runs tpufit's
copies of Keras's steps, which count each replica's loss by its share of the
step's rows (`keras_steps.py`), so that a partial batch split unevenly over
the replicas gives one device's result. What every step is made of is in
`step_parts.py`.

With a NaN guard (`finite.NanGuard`), a training step on Keras's own
`train_step` (padded, or tpufit's copy of it at true size) computes its
gradients and applies them only if the loss and every gradient are finite on
every replica (`finite.apply_if_finite`); a model's own `train_step` cannot be undone,
so its step only reports whether its logged `loss` is finite.

Each train/eval replica step returns `(logs, step_loss, padding_rows, extras,
non_finite)`: `logs` are the model's running metric results, `step_loss` is
this replica's share of the step's loss (summed over replicas), `padding_rows`
the padding rows of the global batch, `extras` the values the hooks'
`host_call` functions asked for (averaged over replicas), `non_finite` whether
a guarded training step found its loss (or gradients) not finite on some
replica (the same on every replica; always `False` unguarded and in eval).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from tpufit import _keras_shim, errors
from tpufit.config import Layout, Mode
from tpufit.device import finite, outfeed
from tpufit.device.finite import NanGuard, apply_if_finite, snapshot
from tpufit.device.keras_steps import keras_test_step, keras_train_step
from tpufit.device.step_parts import (
    HostCalls,
    StepTensors,
    additional_losses,
    call_compute_loss,
    global_signals,
    host_call_values,
    summed_over_replicas,
    timestep_mask,
)

MEAN_REDUCTIONS = ("sum_over_batch_size", "mean")

_STEP_METHODS = {
    Mode.TRAIN: ("train_step", "compute_loss", "compute_metrics"),
    Mode.EVAL: ("test_step", "compute_loss", "compute_metrics"),
}


def uses_keras_steps(model: keras.Model, mode: Mode) -> bool:
    """Whether `model` (the replicas' copy) keeps Keras's own step for `Mode.TRAIN` / `Mode.EVAL`.

    Only then can a padded batch be masked exactly: the loss must also be one
    whose reduction divides by the batch size, so padding can be rescaled away.
    """
    methods = _STEP_METHODS[mode]
    if any(getattr(type(model), m) is not getattr(keras.Model, m) for m in methods):
        return False
    losses = [loss for loss in tf.nest.flatten(model.loss) if loss is not None]
    return all(getattr(loss, "reduction", MEAN_REDUCTIONS[0]) in MEAN_REDUCTIONS for loss in losses)


def keeps_keras_train_step(model: keras.Model) -> bool:
    """Whether `model` trains with Keras's own `train_step` and `compute_metrics`.

    Only such a step can be guarded by tpufit's copy of it (an overridden
    `compute_loss` is fine: the copy calls it as Keras's step does).
    """
    methods = ("train_step", "compute_metrics")
    return all(getattr(type(model), m) is getattr(keras.Model, m) for m in methods)


def nan_guard_for(model: keras.Model, guarded: bool) -> NanGuard:
    """The `NanGuard` of `model`'s training program: withheld updates wherever tpufit can."""
    if not guarded:
        return NanGuard.OFF
    return NanGuard.WITHHOLD if keeps_keras_train_step(model) else NanGuard.HALT


def _weights(sample_weight, mask: tf.Tensor):
    if sample_weight is None:
        return mask

    def times_mask(weight):
        weight = tf.cast(weight, mask.dtype)
        return weight * tf.reshape(mask, [-1] + [1] * (weight.shape.rank - 1))

    return tf.nest.map_structure(times_mask, sample_weight)


def _padded_loss(model, x, y, y_pred, weights, signals, training):
    """Returns `(loss, tracked_loss)` for a padded batch on one replica.

    `compute_loss` with zero weights on padding divides the data loss by the
    padded size; multiplying the data part by (global batch / real rows) makes
    it the mean over real rows, as Keras computes it on the unpadded batch.
    A masked output's loss is divided by its unmasked timesteps, those of the
    padding rows too: multiplied by (these timesteps × replicas / the real
    rows' unmasked timesteps of all replicas), it is the mean over the real
    timesteps of the whole batch, whichever replica holds them.
    `tracked_loss` is the replica's value for the loss tracker (unscaled for
    distribution), to be weighted by `real_rows / num_replicas`.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    mask = timestep_mask(y_pred)
    if mask is None:
        rows_here = tf.cast(tf.shape(signals["mask"])[0], tf.float32)
        # An all-padding batch (a worker's input_fn ended early) has no data loss.
        rescale = rows_here * replicas / tf.maximum(signals["real_rows"][0], 1.0)
    else:
        real = tf.reshape(signals["mask"], [-1] + [1] * (mask.shape.rank - 1))
        real_steps = summed_over_replicas(tf.reduce_sum(mask * real))
        rescale = tf.math.divide_no_nan(tf.reduce_sum(mask) * replicas, real_steps)
    rescale = tf.cast(rescale, keras.config.floatx())
    loss = call_compute_loss(model, x, y, y_pred, weights, training)
    # Regularization does not depend on the rows, so it is not rescaled.
    regularization = additional_losses(model)
    data_loss = (loss - regularization) * rescale
    tracked = (data_loss + regularization) * replicas
    return data_loss + regularization, tracked


def _outfeed(
    model, data, tracked_loss, signals, host_calls: HostCalls, gradients=None, non_finite=None
):
    """Returns `(logs, step_loss share, padding rows, extras, non_finite)` of one replica's step.

    A withheld step (`non_finite`) counted no rows in the metrics, so it reports no padding.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    rows = tf.cast(tf.shape(signals["mask"])[0] * replicas, tf.float32)
    logs = model.get_metrics_result()
    extras = host_call_values(host_calls, StepTensors(model, data, logs, gradients))
    step_loss = tf.cast(tracked_loss, tf.float32) / replicas
    padding = rows - signals["real_rows"][0]
    if non_finite is None:
        return logs, step_loss, padding, extras, tf.constant(False)
    return logs, step_loss, tf.where(non_finite, 0.0, padding), extras, non_finite


def _update_trackers(model, tracked_loss, y, y_pred, weights, signals) -> None:
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    _keras_shim.loss_tracker(model).update_state(
        tracked_loss, sample_weight=signals["real_rows"][0] / replicas
    )
    _keras_shim.update_compiled_metrics(model, y, y_pred, weights, signals["mask"])


def padded_train_step(
    model: keras.Model,
    data,
    signals,
    host_calls: HostCalls | None = None,
    *,
    guard: bool = False,
):
    """Keras's `train_step`, counting only the real rows of a padded batch.

    With `guard`, a step whose loss or gradients are not finite changes
    nothing (`apply_if_finite`), not even the loss tracker and metrics.
    """
    signals = global_signals(signals)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weights = _weights(sample_weight, signals["mask"])
    before = snapshot(model) if guard else None
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss, tracked = _padded_loss(model, x, y, y_pred, weights, signals, True)
        scaled = model.optimizer.scale_loss(loss)
    variables = model.trainable_weights
    gradients = tape.gradient(scaled, variables)
    if not guard:
        if variables:  # As Keras's step: nothing to apply (`Engine.fit` warned).
            model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        _update_trackers(model, tracked, y, y_pred, weights, signals)
        return _outfeed(model, data, tracked, signals, host_calls or {}, gradients)
    # Tracked first: a withheld step restores the metrics with the rest.
    _update_trackers(model, tracked, y, y_pred, weights, signals)
    non_finite = tf.logical_not(apply_if_finite(model, loss, gradients, before))
    with tf.control_dependencies([non_finite]):  # the logs after a restore
        return _outfeed(model, data, tracked, signals, host_calls or {}, gradients, non_finite)


def padded_test_step(model: keras.Model, data, signals, host_calls: HostCalls | None = None):
    """Keras's `test_step`, counting only the real rows of a padded batch."""
    signals = global_signals(signals)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weights = _weights(sample_weight, signals["mask"])
    y_pred = model(x, training=False)
    _, tracked = _padded_loss(model, x, y, y_pred, weights, signals, False)
    _update_trackers(model, tracked, y, y_pred, weights, signals)
    return _outfeed(model, data, tracked, signals, host_calls or {})


def _own_step(model: keras.Model, method: Callable, host_calls: HostCalls, checks_loss=False):
    """The model's own step; with `checks_loss`, it reports whether its logged loss is finite."""

    def step(data, signals):
        del signals  # The user's step sees its data exactly as the input yields it.
        logs = method(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        step_loss = logs.get("loss") if isinstance(logs, dict) else None
        non_finite = tf.constant(False)
        if checks_loss and step_loss is not None:
            non_finite = finite.on_some_replica(tf.logical_not(finite.all_finite([step_loss])))
        if step_loss is None:
            step_loss = tf.constant(float("nan"))
        extras = host_call_values(host_calls, StepTensors(model, data, logs, None))
        step_loss = tf.cast(step_loss, tf.float32) / replicas
        return logs, step_loss, tf.constant(0.0), extras, non_finite

    return step


def train_step_for(
    model: keras.Model,
    layout: Layout,
    host_calls: HostCalls | None = None,
    nan_guard: NanGuard = NanGuard.OFF,
):
    """Returns the training replica step `(data, signals) -> (logs, loss, padding, extras, bad)`.

    Args:
        model: The replicas' copy of the model, compiled.
        layout: `Layout.PADDED` for tpufit's padded step, `Layout.TRUE_SIZE`
            for the model's own `train_step` (or tpufit's copy of Keras's:
            guarded with `NanGuard.WITHHOLD`, split by rows on several
            replicas, see `keras_train_step`).
        host_calls: The hooks' extra per-step values.
        nan_guard: From `nan_guard_for(model, ...)`.
    """
    withhold = nan_guard is NanGuard.WITHHOLD
    if layout is Layout.PADDED:
        return lambda data, signals: padded_train_step(
            model, data, signals, host_calls, guard=withhold
        )
    own = _own_step(model, model.train_step, host_calls or {}, nan_guard is NanGuard.HALT)
    keras_steps = uses_keras_steps(model, Mode.TRAIN)

    def step(data, signals):
        split = keras_steps and _on_several_replicas()
        if withhold or split:
            return keras_train_step(model, data, host_calls, guard=withhold, split=split)
        return own(data, signals)

    return step


def _on_several_replicas() -> bool:
    return tf.distribute.get_strategy().num_replicas_in_sync > 1


def test_step_for(model: keras.Model, layout: Layout, host_calls: HostCalls | None = None):
    """Returns the evaluation replica step `(data, signals) -> (logs, loss, padding, extras, bad)`.

    Args:
        model: The replicas' copy of the model, compiled.
        layout: `Layout.PADDED` for tpufit's padded step, `Layout.TRUE_SIZE`
            for the model's own `test_step` (on several replicas, tpufit's
            copy of Keras's, split by rows: see `keras_test_step`).
        host_calls: The hooks' extra per-step values.
    """
    if layout is Layout.PADDED:
        return lambda data, signals: padded_test_step(model, data, signals, host_calls)
    own = _own_step(model, model.test_step, host_calls or {})
    keras_steps = uses_keras_steps(model, Mode.EVAL)

    def step(data, signals):
        if keras_steps and _on_several_replicas():
            return keras_test_step(model, data, host_calls)
        return own(data, signals)

    return step


def replica_step_for(
    model: keras.Model,
    mode: Mode,
    layout: Layout,
    host_calls: HostCalls | None = None,
    nan_guard: NanGuard = NanGuard.OFF,
) -> tuple[Callable, Callable]:
    """Returns `(replica_step, reduce)` for a mode's `LoopProgram`.

    Args:
        model: The replicas' copy of the model (compiled for `TRAIN` / `EVAL`).
        mode: The run's mode.
        layout: The run's layout (see `train_step_for`); prediction always
            runs on padded batches.
        host_calls: The hooks' extra per-step values (train and eval).
        nan_guard: The training program's guard (see `train_step_for`).
    """
    if mode == Mode.TRAIN:
        return train_step_for(model, layout, host_calls, nan_guard), outfeed.reduce_logs
    if mode == Mode.EVAL:
        return test_step_for(model, layout, host_calls), outfeed.reduce_logs
    return predict_step_for(model), outfeed.gather_predictions


def predict_step_for(model: keras.Model) -> Callable:
    """Returns the replica step `(data, signals) -> (outputs, mask)` for prediction.

    Rows are independent in prediction, so even an overridden `predict_step`
    runs on padded batches; the padding rows are dropped on the host.
    """

    def step(data, signals):
        return model.predict_step(data), signals["mask"]

    return step


def warn_if_nothing_trains(model: keras.Model) -> None:
    """Warns, as Keras does, when a model on Keras's steps has no trainable weights."""
    # Keras's own train_step warns so (and applies nothing); tpufit's copies of it do the same.
    if uses_keras_steps(model, Mode.TRAIN) and not model.trainable_weights:
        errors.warn("The model does not have any trainable weights.")


def needs_metric_state(model: keras.Model, mode: Mode, layout: Layout) -> bool:
    """Whether the compiled metrics' state must exist before `mode`'s step is traced.

    Keras's steps (tpufit's masked copies, or Keras's own at true size)
    update the compiled metrics; a model's own steps build what they use.
    """
    return mode is not Mode.PREDICT and (layout is Layout.PADDED or uses_keras_steps(model, mode))
