"""The `Infeed`, and the stream builder of in-memory arrays.

Keras's data adapters hand the step batches of whatever size the data ends
with; a looped, compiled program wants one static shape. The infeed owns that
difference. It yields `(data, signals)` elements, where `data` is the user's
structure (packed as Keras packs arrays: `x`, `(x, y)` or `(x, y,
sample_weight)`; whatever a `tf.data.Dataset` yields) and `signals` are the
per-row mask and stopping signal of `padding.py`. Splitting batches over
replicas is `tf.distribute`'s job (`sharding.distribute`).

This module also owns the float casting of inputs (`as_input_array`) and the
stop batches; `dataset_stream.py` builds the infeed of a batched dataset and
counts a stream's batches. Two layouts (`Layout`):

- `PADDED` (models on Keras's own steps, and every `predict`): each pass over
  the data ends with a batch padded to full size;
- `TRUE_SIZE` (models with their own `train_step` / `test_step`): the full
  batches form the stream, and the partial last batch of each pass is a
  separate one-element `tail` stream, run as a one-step loop of its own
  (arrays; a dataset's batches pass through as they are).

Training streams repeat pass after pass (reshuffling arrays each pass), so one
iterator serves a whole `fit` (where its epochs fall in the passes is
`tpufit.run.passes`'s business); evaluation and prediction streams make one pass
and then repeat a stop batch, so a loop that reads past the data stops cleanly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from tpufit import errors
from tpufit.config import Layout, Mode
from tpufit.data import array_rows, composite, padding

DEFAULT_BATCH_SIZE = 32  # Keras's default for arrays.


class Lookahead(Protocol):
    """Reads a one-shot source (a generator) ahead of a training run, to find where it ends.

    A training loop runs exactly the steps it is given, so a stream whose
    length is unknown must be read ahead of the loops: the run asks before
    each loop how many of its steps the data still has.

    Attributes:
        repeats: Whether passes after the first exist (its batches are kept).
    """

    repeats: bool

    def steps_within(self, steps: int) -> int:
        """Of the first pass's first `steps` steps, how many exist (reading ahead as needed)."""


@dataclasses.dataclass(frozen=True)
class Infeed:
    """A stream of `(data, signals)` global batches and what is known of it.

    Attributes:
        dataset: The stream; endless (train) or one pass then stop batches.
        batch_size: The global batch size, the static first dimension.
        steps_per_pass: Batches in one pass over the data (not counting the
            tail), or `None` when unknown (the stop signal ends the pass).
        mode: The mode the stream was built for (`TRAIN` streams are endless).
        layout: How its partial last batch is laid out (see `Layout`).
        tail: For the `TRUE_SIZE` layout, the partial last batch of each pass
            as a stream of one batch per pass (endless when `dataset` is); else `None`.
        dataset_fn: Builds one input pipeline's per-replica batches (an
            `input_fn`), for `distribute_datasets_from_function`; else `None`.
        rows: Real rows in one pass, when known (arrays).
        lookahead: For a training stream whose first pass has an unknown
            length (a generator), what finds its end ahead of the loops; else `None`.
        pipeline_errors: The `tpufit` errors a Python source raised inside
            `tf.data` while the stream was read, oldest first: `tf.data`
            wraps them in an `OpError`, and the run re-raises the one whose
            first line the `OpError`'s message holds. The source's own list,
            so errors raised while the run reads the stream show up here.
        resident: Arrays the run may serve from the device instead of
            `dataset` (`resident.Resident`), or `None`.
    """

    dataset: tf.data.Dataset
    batch_size: int
    steps_per_pass: int | None
    mode: Mode
    layout: Layout
    tail: tf.data.Dataset | None = None
    dataset_fn: Any = None
    rows: int | None = None
    lookahead: Lookahead | None = None
    pipeline_errors: list = dataclasses.field(default_factory=list)
    resident: Any = None

    def skipping(self, batches: int, tail_batches: int) -> Infeed:
        """Returns this infeed resumed mid-epoch: its first batches already trained, skipped.

        An `input_fn`'s per-pipeline `dataset_fn` is not skipped: its
        pipelines start over.

        Args:
            batches: Batches of `dataset` to skip.
            tail_batches: Batches of `tail` to skip (one per pass).
        """
        dataset = self.dataset.skip(batches) if batches else self.dataset
        tail = self.tail.skip(tail_batches) if self.tail is not None else None
        resident = self.resident.skipping(batches) if self.resident is not None else None
        return dataclasses.replace(self, dataset=dataset, tail=tail, resident=resident)


def as_input_array(value: Any) -> np.ndarray:
    """Returns one input value as a numpy array, floating values in Keras's `floatx`.

    Keras's array and generator adapters cast every floating input to
    `floatx`; arrays and Python sources both go through this one function.
    """
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(keras.config.floatx(), copy=False)
    return array


def _to_tensor_ready(value):
    if value is None:
        return None  # Data for an optional input left out: Keras passes None on to the model.
    if isinstance(value, (list, tuple)):
        return tuple(_to_tensor_ready(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_tensor_ready(v) for k, v in value.items()}
    return as_input_array(value)


def as_tuples(structure: Any) -> Any:
    """`structure` with every list a tuple: `tf.data` stacks a list, and holds none with a None."""
    if isinstance(structure, (list, tuple)):
        return tuple(as_tuples(part) for part in structure)
    if isinstance(structure, dict):
        return {key: as_tuples(part) for key, part in structure.items()}
    return structure


def pack_arrays(x, y=None, sample_weight=None):
    """Packs arrays as Keras hands them to a step: `x`, `(x, y)` or `(x, y, sample_weight)`.

    As `keras.utils.pack_x_y_sample_weight` does, `x` alone stays bare unless it
    is a list or tuple (multi-input), which becomes `(x,)`. Lists become tuples
    (so multi-input lists are not stacked into one tensor) and floating arrays
    take Keras's `floatx`, as Keras's array adapter does.

    Raises:
        InvalidArgumentError: `sample_weight` is given without `y`.
    """
    if sample_weight is not None and y is None:
        raise errors.invalid_argument(
            "sample_weight",
            "an array",
            "y as well: weights weigh each row's loss against its target",
            what="`sample_weight` was given without `y`",
        )
    return _to_tensor_ready(keras.utils.pack_x_y_sample_weight(x, y, sample_weight))


def num_rows(data) -> int:
    """Returns the number of rows of a packed array structure."""
    return int(tf.nest.flatten(data)[0].shape[0])


def _without_none(data: Any) -> tuple[Any, Callable | None]:
    """Returns `data` without its `None` parts, and `put_back(batch, signals)` to restore them.

    A `None` (an optional input left out) has no rows to shuffle, take or pad:
    the arrays are batched without it, and each batch gets it back in its
    place. `put_back` is `None` when `data` has no `None` part.
    """
    flat = tf.nest.flatten(data)
    if all(leaf is not None for leaf in flat):
        return data, None
    present = tuple(leaf for leaf in flat if leaf is not None)

    @tf.autograph.experimental.do_not_convert
    def put_back(batch: tuple, signals: Any) -> tuple:
        arrays = iter(batch)
        whole = [None if leaf is None else next(arrays) for leaf in flat]
        return tf.nest.pack_sequence_as(data, whole), signals

    return present, put_back


def _permutation(num: int, seed: int | None, pass_index: tf.Tensor) -> tf.Tensor:
    order = tf.range(num, dtype=tf.int64)
    if seed is None:
        return order
    return tf.random.experimental.stateless_shuffle(
        order, seed=tf.stack([tf.constant(seed, tf.int64), pass_index])
    )


def _array_options() -> tf.data.Options:
    options = tf.data.Options()
    # Already parallel and prefetched: default rewrites would only slow making the iterator.
    options.experimental_optimization.apply_default_optimizations = False
    return options


def stop_batches(data_spec, batch_size: int) -> tf.data.Dataset:
    """Returns the endless stream of stop batches that follows an evaluation or prediction pass."""
    data = tf.nest.map_structure(lambda spec: composite.zeros(spec, batch_size), data_spec)
    return tf.data.Dataset.from_tensors((data, padding.stop_signals(batch_size))).repeat()


def from_arrays(
    data: tuple,
    batch_size: int,
    *,
    mode: Mode,
    layout: Layout,
    shuffle_seed: int | None = None,
    drop_remainder: bool = False,
) -> Infeed:
    """Builds the infeed of in-memory arrays.

    Args:
        data: Arrays packed by `pack_arrays`: `x`, `(x,)`, `(x, y)` or
            `(x, y, sample_weight)`.
        batch_size: The global batch size.
        mode: `TRAIN` repeats pass after pass; `EVAL` and `PREDICT` make one
            pass, then stop batches.
        layout: `PADDED` pads the partial last batch; `TRUE_SIZE` gives it as
            the `tail` stream.
        shuffle_seed: Reshuffle the rows each pass with this seed; `None`
            keeps the input order.
        drop_remainder: Drop the partial last batch of each pass altogether.

    Returns:
        The `Infeed`.
    """
    endless = mode == Mode.TRAIN
    data, put_back = _without_none(data)
    rows = num_rows(data)
    full = rows // batch_size
    remainder = 0 if drop_remainder else rows - full * batch_size
    pad = layout is Layout.PADDED and remainder > 0
    positions, signals = padding.pass_layout(rows, batch_size, pad=pad)
    steps = len(positions)
    take = array_rows.row_taker(data)
    gathered = shuffle_seed is None and steps > 0 and array_rows.small(data)
    if gathered:
        # Small data: its padded batches, gathered once on the host; no map to trace.
        batches = tf.nest.map_structure(lambda a: np.take(a, positions, axis=0), data)
        indices = tf.data.Dataset.from_tensor_slices((batches, signals))
        indices = indices.repeat() if endless else indices
    elif shuffle_seed is None:
        indices = tf.data.Dataset.from_tensor_slices((positions, signals))
        indices = indices.repeat() if endless else indices
    else:
        # The pipeline's functions are traced as written (no tensor control flow in them or
        # what they call): AutoGraph converting them took 60-120 ms of a new model's first call.
        @tf.autograph.experimental.do_not_convert
        def pass_batches(pass_index):
            order = _permutation(rows, shuffle_seed, pass_index)
            return tf.data.Dataset.from_tensor_slices((tf.gather(order, positions), signals))

        passes = tf.data.Dataset.range(tf.int64.max if endless else 1)
        indices = passes.flat_map(pass_batches)

    @tf.autograph.experimental.do_not_convert  # as pass_batches
    def gather(rows_, batch_signals):
        return take(rows_), batch_signals

    if steps:
        if gathered:
            dataset = indices
        else:
            dataset = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        if not endless:
            dataset = dataset.concatenate(stop_batches(dataset.element_spec[0], batch_size))
    else:
        # Only the tail has rows; an endless stream of empty passes would spin.
        spec = tf.nest.map_structure(
            lambda a: tf.TensorSpec((batch_size,) + a.shape[1:], tf.as_dtype(a.dtype)), data
        )
        dataset = stop_batches(spec, batch_size)
    tail = None
    if remainder and not pad:
        tail_rows = remainder

        @tf.autograph.experimental.do_not_convert
        def tail_batch(pass_index):
            order = _permutation(rows, shuffle_seed, pass_index)[rows - tail_rows :]
            return take(order), padding.make_signals(tail_rows, tail_rows)

        tail_passes = tf.data.Dataset.range(tf.int64.max if endless else 1)
        tail = tail_passes.map(tail_batch)
        tail = tail.map(put_back) if put_back is not None else tail
        tail = tail.with_options(_array_options()).prefetch(1)
    dataset = dataset.map(put_back) if put_back is not None else dataset
    dataset = dataset.with_options(_array_options()).prefetch(tf.data.AUTOTUNE)
    rows = full * batch_size + remainder
    return Infeed(dataset, batch_size, steps, mode, layout, tail, rows=rows)
