"""`attach` / `detach`: a Keras model's own `compile`, `fit`, `evaluate`, `predict` through tpufit.

Code and notebooks written for plain Keras call `model.fit(...)`; after
`tpufit.attach(model)` those calls run through a `tpufit.TPUModel` (looped
device programs, exact padding, hooks), with the same signatures and return
values, and `tpufit.detach(model)` puts Keras's own methods back. The four
methods are set on the model instance, shadowing its class's; everything else
of the model (its layers, weights, `predict_step`, `save`) stays Keras's.
"""

from __future__ import annotations

from typing import Any

import keras

from tpufit import _keras_shim, errors
from tpufit.model import TPUModel

ROUTED = ("compile", "fit", "evaluate", "predict")
_ATTACHED = "_tpufit_attached"


def attach(model: keras.Model, **tpu_model_kwargs: Any) -> TPUModel:
    """Routes `model.compile`, `fit`, `evaluate` and `predict` through a new `TPUModel`.

    Args:
        model: A Keras 3 model.
        **tpu_model_kwargs: `TPUModel`'s arguments (`strategy`,
            `iterations_per_loop`, `model_dir`, `config`).

    A model compiled before `attach` keeps its compile arguments except
    `jit_compile` (Keras stores its resolution of `"auto"`, not what was
    asked): XLA follows `config.jit_compile`, as when `compile` comes after
    `attach`; pass `config=tpufit.RunConfig(jit_compile=False)` to choose.

    Returns:
        The `TPUModel` the calls go through (for `global_step`, `export`, ...).

    Raises:
        InvalidArgumentError: The model is attached already.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> tm = tpufit.attach(model, iterations_per_loop=10)
        >>> model.compile(optimizer="adam", loss="mse")
        >>> history = model.fit(np.ones((64, 4)), np.ones((64, 2)), verbose=0)
        >>> tm.global_step
        2
        >>> tpufit.detach(model)
    """
    if attached(model) is not None:
        raise errors.invalid_argument(
            "model",
            type(model).__name__,
            "a model not attached yet (call tpufit.detach(model) first to attach it anew)",
            what="The model is already attached to tpufit",
        )
    tpu_model = TPUModel(model, **tpu_model_kwargs)
    arguments = _keras_shim.compile_arguments(model)
    if arguments is not None:
        # Compiled before attaching: the TPUModel takes the same compile arguments, but
        # not `jit_compile`: Keras records its own resolution of "auto" (no XLA on a
        # CPU), so keeping it would make the order of `compile` and `attach` decide.
        arguments.pop("jit_compile", None)
        tpu_model.compile(**arguments)
    for name in ROUTED:
        object.__setattr__(model, name, getattr(tpu_model, name))
    object.__setattr__(model, _ATTACHED, tpu_model)
    return tpu_model


def detach(model: keras.Model) -> None:
    """Gives `model` its own Keras `compile`, `fit`, `evaluate` and `predict` back.

    Raises:
        InvalidArgumentError: The model is not attached.
    """
    if attached(model) is None:
        raise errors.invalid_argument(
            "model", type(model).__name__, "a model attached with tpufit.attach(model)"
        )
    for name in (*ROUTED, _ATTACHED):
        object.__delattr__(model, name)


def attached(model: keras.Model) -> TPUModel | None:
    """Returns the `TPUModel` that `model`'s calls go through, or `None`."""
    return model.__dict__.get(_ATTACHED)
