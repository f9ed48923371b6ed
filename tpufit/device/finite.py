"""The NaN guard's conditional update: a training step that changes nothing unless it is finite.

A guarded step (see `steps.py`) snapshots what it changes besides the
trained weights and the optimizer, computes its gradients, and applies them
only where the loss and every gradient are finite on every replica; else it
puts the snapshot back, so the step leaves no trace (`NanGuard.WITHHOLD`).
"""

from __future__ import annotations

import enum

import keras
import tensorflow as tf


class NanGuard(enum.Enum):
    """What a training program does at a step whose loss (or gradients) is not finite.

    `OFF`: nothing, as in Keras: training runs on.
    `WITHHOLD`: the step applies no update (tpufit's copies of Keras's train
    step apply the gradients only if the loss and every gradient are finite
    on every replica, `finite.apply_if_finite`); the loop ends at that step,
    which is not counted.
    `HALT`: the step is the model's own and has applied its update; the loop
    ends after it, which is counted.
    """

    OFF = "off"
    WITHHOLD = "withhold"
    HALT = "halt"


def _values(tensor):
    return tensor.values if isinstance(tensor, tf.IndexedSlices) else tensor


def all_finite(tensors) -> tf.Tensor:
    """Whether every entry of every tensor in `tensors` (`None` skipped) is finite."""
    checks = [tf.reduce_all(tf.math.is_finite(_values(t))) for t in tensors if t is not None]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def on_some_replica(flag: tf.Tensor) -> tf.Tensor:
    """Whether `flag` is set on some replica (a collective: call it outside any `cond`)."""
    context = tf.distribute.get_replica_context()
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(flag, tf.float32)) > 0


def snapshot(model: keras.Model) -> tuple[list, list[tf.Tensor]]:
    """Reads what a training step changes besides the trained weights and the optimizer.

    That is the non-trainable weights (BatchNormalization's moving
    statistics), the random seeds' states and the metrics. Taken before the
    step, for `apply_if_finite` to restore. A read of a variable the step
    does not change shares its buffer: frozen weights cost no copy.

    Returns:
        `(variables, values)`.
    """
    variables = [*model.non_trainable_variables, *model.metrics_variables]
    return variables, [tf.identity(variable.value) for variable in variables]


def apply_if_finite(model: keras.Model, loss, gradients: list, before: tuple) -> tf.Tensor:
    """Applies a step's gradients if its loss and gradients are finite on every replica.

    Otherwise the step changes nothing: the weights, the optimizer's slots
    and `optimizer.iterations` keep their values (zeroed gradients would
    still move Adam's moments and the iterations), and what the step changed
    besides goes back to `before` (from `snapshot`). A `LossScaleOptimizer`'s
    scaled gradients overflow by design (it skips those steps and lowers its
    scale itself), so with one only the loss is checked.

    The `cond` runs in the cross-replica context of a `merge_call`, as in
    Keras's `LossScaleOptimizer`: under `MirroredStrategy`, a `cond` in the
    replica context around the optimizer's own `merge_call` fails.

    Returns:
        Whether the gradients were applied: the same on every replica.
    """
    optimizer = model.optimizer
    variables = model.trainable_weights
    state, values = before
    scales = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    bad_here = tf.logical_not(all_finite([loss] if scales else [loss, *gradients]))

    def apply(gradients) -> None:
        if variables:  # As Keras's step: a model without trainable weights applies nothing.
            optimizer.apply_gradients(zip(gradients, variables, strict=True))

    def restore(values) -> None:
        for variable, value in zip(state, values, strict=True):
            variable.assign(value)

    def merge(strategy, bad_here, gradients, values):
        each = strategy.extended.call_for_each_replica
        finite = tf.equal(strategy.reduce(tf.distribute.ReduceOp.SUM, bad_here, axis=None), 0.0)
        tf.cond(finite, lambda: each(apply, (gradients,)), lambda: each(restore, (values,)))
        return finite

    context = tf.distribute.get_replica_context()
    return context.merge_call(merge, args=(tf.cast(bad_here, tf.float32), gradients, values))
