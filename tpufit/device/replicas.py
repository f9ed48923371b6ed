"""The model as the strategy runs it: its placed copy, loop programs and state.

`Replicas` owns what every run of a `TPUModel` shares: the user's model
(`user_model`), the Keras model whose variables live under the strategy
(`replica_model`: the user's model itself, or a clone when the user's was
built outside a non-default strategy's scope), the batch layout of each mode
(`layout_for`, decided here only), the loop programs (one per mode, layout
and `host_call` set, traced once) and their XLA decision, the lazily built
state (layers, metrics, optimizer slots), and keeping the user's model's
weights in step with the clone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import cluster
from tpufit.config import Layout, Mode
from tpufit.data import infeed, padding, sharding
from tpufit.device import programs
from tpufit.device import steps as step_fns
from tpufit.device.layout import LayoutChoice, choose_layout
from tpufit.device.strategy import build_state, place_model, place_optimizer


class Replicas:
    """The user's model placed under `strategy`, with its programs.

    Args:
        model: The user's Keras model (kept as `user_model`; the strategy runs
            `replica_model`).
        strategy: The `tf.distribute` strategy of every run.
        step_counters: The int64 variables training programs add their steps to.
        partial_batch: `RunConfig.partial_batch`, for `layout_for`.
    """

    def __init__(
        self,
        model: keras.Model,
        strategy: tf.distribute.Strategy,
        step_counters: Sequence[tf.Variable] = (),
        partial_batch: str = "auto",
    ) -> None:
        self.user_model = model
        self.strategy = strategy
        self.replica_model = place_model(model, strategy)
        self.step_counters = tuple(step_counters)
        self.compiled = False
        self.optimizers: list[keras.optimizers.Optimizer] = []  # Every optimizer compiled.
        self.input_spec: Any = None  # The inputs' spec of the latest run's data.
        self._programs: dict[tuple[Mode, Layout, tuple], programs.LoopProgram] = {}
        self._metrics_built = False
        self.partial_batch = partial_batch
        self.layouts: dict[str, LayoutChoice] = {}  # Each mode's latest choice, and why.

    @property
    def cloned(self) -> bool:
        """Whether the replicas run a clone of the user's model."""
        return self.replica_model is not self.user_model

    @property
    def traces(self) -> dict[str, int]:
        """How many times each mode's loop program was traced, keyed by the mode's value."""
        counts: dict[str, int] = {}
        for (mode, *_), program in self._programs.items():
            counts[str(mode)] = counts.get(str(mode), 0) + program.traces
        return counts

    def compile(self, args: tuple, kwargs: dict) -> None:
        """Compiles `replica_model` (every optimizer given placed under the strategy)."""
        # A GAN's compile takes two optimizers: each must have its variables under the strategy.
        args = tuple(place_optimizer(value, self.strategy) for value in args)
        kwargs = {name: place_optimizer(value, self.strategy) for name, value in kwargs.items()}
        with self.strategy.scope():
            # The class's own compile: `tpufit.attach` routes the instance's through tpufit.
            type(self.replica_model).compile(self.replica_model, *args, **kwargs)
        given = [v for v in (*args, *kwargs.values()) if isinstance(v, keras.optimizers.Optimizer)]
        own = getattr(self.replica_model, "optimizer", None)
        self.optimizers = given + ([own] if own is not None and own not in given else [])
        if (
            self.replica_model.built
            and isinstance(own, keras.optimizers.Optimizer)
            and not own.built
        ):
            # Its state exists from now on, so a restored one can be set before `fit`.
            with self.strategy.scope():
                own.build(self.replica_model.trainable_variables)
        if self.cloned and getattr(self.user_model, "optimizer", None) is None:
            # Callbacks reach the optimizer through the user's model (ReduceLROnPlateau).
            self.user_model.optimizer = self.replica_model.optimizer
        self.compiled = True
        self._programs.clear()
        self._metrics_built = False

    def layout_for(self, mode: Mode) -> Layout:
        """The layout of `mode`'s batches: padded where padding rows are provably invisible."""
        choice = choose_layout(self.replica_model, mode, self.partial_batch)
        self.layouts[str(mode)] = choice
        return choice.layout

    def program(
        self,
        mode: Mode,
        layout: Layout,
        jit_compile: bool | str,
        host_calls: dict | None = None,
        *,
        nan_guard: bool = False,
    ) -> programs.LoopProgram:
        """Returns the loop program of `mode`, built once per layout, `host_call` set and guard.

        Args:
            mode: The run's mode.
            layout: The run's layout, from `layout_for(mode)`.
            jit_compile: As `RunConfig.jit_compile`, for a program built now.
            host_calls: The hooks' `host_call` functions of the run.
            nan_guard: Whether a training program ends at the first step whose
                loss (or gradients) is not finite, withholding its update
                wherever the step is Keras's own (`steps.nan_guard_for`).
        """
        host_calls = host_calls or {}
        training = mode == Mode.TRAIN
        guard = step_fns.nan_guard_for(self.replica_model, nan_guard and training)
        # `compile(run_eagerly=True)` may come and go between runs.
        eager = bool(getattr(self.replica_model, "run_eagerly", False))
        key = (mode, layout, tuple(host_calls.items()), guard, eager)
        if key not in self._programs:
            step, reduce = step_fns.replica_step_for(
                self.replica_model, mode, layout, host_calls, guard
            )
            self._programs[key] = programs.LoopProgram(
                self.strategy,
                step,
                reduce,
                # Several workers run known steps: collectives fail inside a stop's `cond`.
                stops=not training and cluster.worker_count(self.strategy) == 1,
                jit_compile=jit_compile,
                mode=mode,
                # Keras's own steps create no state beyond what `prepare_state` builds.
                first_step_eagerly=training
                and not step_fns.uses_keras_steps(self.replica_model, mode),
                step_counters=self.step_counters if training else (),
                nan_guard=guard,
                eager=eager,
            )
        return self._programs[key]

    def predict_jit_compile(self, input_spec: Any, jit_compile: bool | str) -> bool:
        """Whether `predict` runs its step with XLA: the predict program's own decision.

        The decision `predict` made, or, before any `predict`, the one its
        program makes now for batches of `input_spec` (and keeps for every
        `predict` after): one decision, one warning when "auto" falls back.

        Args:
            input_spec: The inputs' structure of `tf.TensorSpec`s, of one
                static batch (as `input_spec`, with the batch size set).
            jit_compile: As `RunConfig.jit_compile`, for a program built now.

        Raises:
            InvalidArgumentError: `jit_compile=True` and XLA cannot compile
                the predict step, as `predict` raises.
        """
        layout = self.layout_for(Mode.PREDICT)
        program = self.program(Mode.PREDICT, layout, jit_compile)
        if program.jit_compile is not None:
            return program.jit_compile
        rows = tf.nest.flatten(input_spec)[0].shape[0]
        signals = padding.make_signals(rows, rows)
        # The element the predict infeed yields: the packed inputs and the batch's signals.
        element_spec = (
            keras.utils.pack_x_y_sample_weight(input_spec),
            tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), signals),
        )
        return program.decide_jit(element_spec)

    def prepare_state(self, feed: infeed.Infeed, *, build_metrics: bool) -> None:
        """Creates `replica_model`'s lazily built state from the feed's element spec.

        Metrics' state is built once, with `build_metrics`.
        """
        data_spec = feed.dataset.element_spec[0]
        self.input_spec = keras.utils.unpack_x_y_sample_weight(data_spec)[0]
        build_metrics = build_metrics and self.compiled and not self._metrics_built
        build_state(
            self.replica_model,
            self.strategy,
            data_spec,
            build_metrics=build_metrics,
            build_optimizer=self.compiled,
        )
        self._metrics_built = self._metrics_built or build_metrics

    def distribute(self, source: infeed.Infeed | tf.data.Dataset) -> Iterator[Any]:
        """Returns an iterator over an infeed (or dataset) split over the replicas and workers."""
        return iter(sharding.distribute(self.strategy, source))

    @contextlib.contextmanager
    def user_weights(self) -> Iterator[None]:
        """A block in which the user's model holds the current weights.

        With a clone, the user's model gets the replicas' weights first, and
        what the block leaves in it (EarlyStopping's best weights, a restored
        backup) goes back to the replicas. Weights the block left bit for bit
        as they came are not copied back: the replicas hold them already.
        """
        if not self.cloned:
            yield
            return
        current = self.replica_model.get_weights()
        self.user_model.set_weights(current)
        yield
        after = self.user_model.get_weights()
        if not all(_same_bits(a, b) for a, b in zip(current, after, strict=True)):
            self.replica_model.set_weights(after)

    @contextlib.contextmanager
    def keeping_user_weights(self) -> Iterator[None]:
        """Leaves the trained weights in the user's model when the block ends, even on error."""
        try:
            yield
        finally:
            self.copy_weights(into_replicas=False)

    def copy_weights(self, *, into_replicas: bool) -> None:
        """Copies weights between `user_model` and `replica_model` (nothing without a clone)."""
        if self.cloned:
            source, target = (
                (self.user_model, self.replica_model)
                if into_replicas
                else (self.replica_model, self.user_model)
            )
            target.set_weights(source.get_weights())


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    # Bits, not values: -0.0 == 0.0 and NaN != NaN would both decide wrongly.
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
