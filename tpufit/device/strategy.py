"""Choosing the `tf.distribute` strategy a `TPUModel` runs under."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from tpufit import _keras_shim, errors
from tpufit.device import symbolic

_TPU_HINTS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")


def _tpu_resolver() -> tf.distribute.cluster_resolver.TPUClusterResolver | None:
    # Constructing a resolver on a machine without a TPU can wait on a cloud
    # metadata server, so only look when something says a TPU is there.
    on_tpu_vm = os.path.exists("/dev/accel0") or tf.config.list_physical_devices("TPU")
    hinted = any(os.environ.get(name) for name in _TPU_HINTS)
    if not (on_tpu_vm or hinted):
        return None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=None if hinted else "local"
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError):
        return None
    return resolver


def resolve_strategy(strategy: tf.distribute.Strategy | str | None) -> tf.distribute.Strategy:
    """Returns the strategy to run under.

    Args:
        strategy: A `tf.distribute.Strategy`, or `None` / `"auto"`: a TPU if a
            TPU cluster resolver finds one, else `MirroredStrategy` over every
            GPU when there are several, else TensorFlow's default strategy
            (one CPU or GPU).

    Returns:
        The strategy.

    Raises:
        InvalidTypeError: `strategy` is neither a strategy nor `None`/`"auto"`.
    """
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy is not None and strategy != "auto":
        raise errors.invalid_type("strategy", strategy, 'a tf.distribute.Strategy, "auto" or None')
    resolver = _tpu_resolver()
    if resolver is not None:
        return tf.distribute.TPUStrategy(resolver)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def describe(strategy: tf.distribute.Strategy) -> str:
    """Returns e.g. "MirroredStrategy with 4 replicas", for messages."""
    replicas = strategy.num_replicas_in_sync
    noun = "replica" if replicas == 1 else "replicas"
    return f"{type(strategy).__name__} with {replicas} {noun}"


def _created_in_scope(strategy: tf.distribute.Strategy, variable) -> bool:
    return strategy.extended.variable_created_in_scope(getattr(variable, "value", variable))


def place_model(model: keras.Model, strategy: tf.distribute.Strategy) -> keras.Model:
    """Returns the replicas' copy of the user's `model`: itself if it lives under `strategy`.

    A model built outside the strategy's scope has plain variables that a
    multi-replica program cannot use; it is cloned under the scope with the
    same weights. An unbuilt model is returned as is: it gets built under the
    scope on its first batch.

    Raises:
        InvalidArgumentError: The model needs rebuilding but cannot be cloned.
    """
    variables = model.variables
    if all(_created_in_scope(strategy, v) for v in variables):
        return model
    with strategy.scope():
        try:
            clone = keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
        except Exception as error:  # noqa: BLE001 - any failure has one remedy.
            raise errors.InvalidArgumentError(
                f"The model was built outside the scope of {describe(strategy)} "
                f"and could not be rebuilt under it ({error}). Build it inside "
                "the scope: `with tm_strategy.scope(): model = ...`, then wrap "
                f"it. Received: model={type(model).__name__}"
            ) from error
    return clone


def place_optimizer(optimizer, strategy: tf.distribute.Strategy):
    """Returns `optimizer`, recreated from its config if its variables are not under `strategy`.

    Strings and other specifications pass through: Keras builds them inside
    the scope `compile` runs in.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    # Its variables, not `iterations`: with gradient accumulation that is a computed tensor.
    if all(_created_in_scope(strategy, v) for v in optimizer.variables):
        return optimizer
    with strategy.scope():
        return type(optimizer).from_config(optimizer.get_config())


def build_state(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    data_spec,
    *,
    build_metrics: bool,
    build_optimizer: bool,
) -> None:
    """Creates, before any loop is traced, every variable a step of `model` would create lazily.

    `model` is the replicas' copy (`Replicas.replica_model`).

    A variable created inside a traced loop gets an initialisation `cond`,
    which fails under `MirroredStrategy`; so the model's layers, the compiled
    loss and metrics' state (with `build_metrics`) and the optimizer's slots
    are created under the strategy first. Like Keras's trainer, this runs the
    model on symbolic tensors shaped as `data_spec`, never on data. A model
    without `call()` (a GAN of sub-models) is left to its own steps.

    Args:
        model: The replicas' copy of the model.
        strategy: The strategy it runs under.
        data_spec: The `tf.TensorSpec` structure of one element `(x, y, sample_weight)`.
        build_metrics: Whether the compiled loss and metrics need their state.
        build_optimizer: Whether to build the optimizer's slots.
    """
    with strategy.scope():
        if symbolic.has_call(model):
            symbolic.build_symbolically(
                model,
                data_spec,
                build_model=_keras_shim.unbuilt_layers(model),
                build_compiled=build_metrics,
            )
        if build_optimizer and model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
