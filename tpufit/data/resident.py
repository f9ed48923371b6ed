"""The resident infeed: arrays copied to the device once, each step's batch gathered in the loop.

The stream infeed (`infeed.from_arrays`) hands the loop its batches through a
`tf.data` iterator. For arrays that fit comfortably in the device's memory,
the resident infeed instead holds the arrays as device tensors and the loop
program gathers each step's rows itself, with the same batches in the same
order as the stream: the same pass layout (`padding.pass_layout`: positions
and signals of every batch of a pass, padded or not as the layout says), the
same per-pass permutation (`stateless_shuffle` with the seed and the pass
index, made on the device), the same split of a global batch over the
replicas (contiguous shares, replica 0 first), and the same stop batches
after an evaluation's or prediction's one pass. A `TRUE_SIZE` layout's
partial last batch stays a stream (`Infeed.tail`): one batch per pass.

`RunConfig(infeed=...)` chooses: `"stream"` never, `"resident"` wherever it
can (numeric arrays, one worker, not a TPU, at least one full or padded
batch), `"auto"` where it can and the arrays take at most `budget_bytes()`
(a share of the free memory; less on a CPU for data read once).

Device copies are cached (`_CACHE`): a `predict` on the same, unchanged array
pays no copy. An entry is found by the array's memory (address, shape,
strides, dtype), kept only while the array that owns that memory lives, and
used only if a fingerprint of the array (up to `_SAMPLED_ROWS` rows spread
over it, hashed) still matches; an in-place change that misses every sampled
row is not seen (docs/inputs.md).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import weakref
import zlib
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from tpufit import cluster
from tpufit.config import Layout, Mode
from tpufit.data import padding
from tpufit.data.infeed import Infeed

STREAM, RESIDENT, AUTO = "stream", "resident", "auto"
CHOICES = (AUTO, RESIDENT, STREAM)
# "auto": resident when the arrays take at most this share of the free memory.
FREE_MEMORY_SHARE = 8
# ... and, on a CPU, for one pass (evaluate, predict) at most this: the device copy sits
# in host memory beside the user's array, and a large predict's peak memory stays near
# its output only if the input is not copied whole.
CPU_ONE_PASS_BUDGET = 64 * 2**20
# An accelerator's free memory is not known before it is used: this is its budget.
ACCELERATOR_BUDGET = 2**30
_SAMPLED_ROWS = 256
_CACHE_ENTRIES = 8


def budget_bytes(one_pass: bool = False) -> int:
    """The size up to which `infeed="auto"` keeps arrays resident.

    With a GPU or TPU, `ACCELERATOR_BUDGET` (1 GiB). On a CPU, an eighth of
    the free RAM (`os.sysconf`), and at most `CPU_ONE_PASS_BUDGET` (64 MiB)
    for data read once (`one_pass`: evaluate, predict).
    """
    if any(d.device_type != "CPU" for d in tf.config.list_physical_devices()):
        return ACCELERATOR_BUDGET
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = ACCELERATOR_BUDGET * FREE_MEMORY_SHARE
    budget = free // FREE_MEMORY_SHARE
    return min(budget, CPU_ONE_PASS_BUDGET) if one_pass else budget


class Static(NamedTuple):
    """What a resident loop's trace depends on besides its tensors' shapes."""

    batch_size: int
    endless: bool


@dataclasses.dataclass(frozen=True)
class Resident:
    """Arrays an infeed can serve from the device, and the pass layout of their batches.

    Attributes:
        data: The packed arrays (no `None` part).
        batch_size: The global batch size.
        positions: `[steps, batch_size]`: the row of the pass that fills each batch row.
        signals: The signals of each batch of a pass, `[steps, batch_size]` each.
        endless: Training: pass after pass; else one pass, then stop batches.
        seed: The shuffle seed, or `None` to keep the input order.
        start: Batches already read (a resumed `fit` skips them).
    """

    data: Any
    batch_size: int
    positions: np.ndarray
    signals: dict
    endless: bool
    seed: int | None
    start: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes the arrays take."""
        return sum(a.nbytes for a in tf.nest.flatten(self.data))

    def skipping(self, batches: int) -> Resident:
        """Returns this resident data with its first `batches` batches already read."""
        return dataclasses.replace(self, start=self.start + batches)

    def usable(self, strategy: tf.distribute.Strategy) -> bool:
        """Whether the loop can gather these arrays' batches under `strategy`."""
        numeric = all(
            np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_
            for a in tf.nest.flatten(self.data)
        )
        return (
            numeric
            and len(self.positions) > 0
            and cluster.worker_count(strategy) == 1
            and not isinstance(strategy, tf.distribute.TPUStrategy)
        )

    def iterator(self, strategy: tf.distribute.Strategy) -> ResidentIterator:
        """Copies the arrays to the device (or finds the copy) and returns the run's iterator."""
        inputs = {
            "data": tf.nest.map_structure(_CACHE.tensor, self.data),
            "positions": tf.constant(self.positions, tf.int64),
            "signals": {k: tf.constant(v) for k, v in self.signals.items()},
            "seed": tf.constant(self.seed or 0, tf.int64),
            "shuffled": tf.constant(self.seed is not None),
        }
        static = Static(self.batch_size, self.endless)
        return ResidentIterator(inputs, static, strategy, self.start)


def offer(
    feed: Infeed,
    data: Any,
    *,
    mode: Mode,
    layout: Layout,
    seed: int | None,
    drop_remainder: bool,
) -> Infeed:
    """Returns `feed` (an array infeed) with its arrays offered for a resident run.

    Nothing is copied here: the run decides (`iterator_for`).

    Args:
        feed: The stream `Infeed` built from `data`.
        data: The packed arrays it streams.
        mode: The run's mode (training streams are endless).
        layout: The partial last batch's layout.
        seed: The shuffle seed, or `None`.
        drop_remainder: Whether the partial last batch is dropped.
    """
    if any(leaf is None for leaf in tf.nest.flatten(data)):
        return feed
    rows, size = int(tf.nest.flatten(data)[0].shape[0]), feed.batch_size
    remainder = 0 if drop_remainder else rows % size
    positions, signals = padding.pass_layout(
        rows, size, pad=layout is Layout.PADDED and remainder > 0
    )
    resident = Resident(data, size, positions, signals, mode is Mode.TRAIN, seed)
    return dataclasses.replace(feed, resident=resident)


def iterator_for(
    feed: Infeed, choice: str, strategy: tf.distribute.Strategy
) -> ResidentIterator | None:
    """Returns the resident iterator of `feed` if the run takes it, else `None` (stream).

    Args:
        feed: The run's `Infeed`.
        choice: `RunConfig.infeed`: `"auto"`, `"resident"` or `"stream"`.
        strategy: The run's strategy.
    """
    resident = feed.resident
    if choice == STREAM or resident is None or not resident.usable(strategy):
        return None
    if choice == AUTO and resident.nbytes > budget_bytes(one_pass=not resident.endless):
        return None
    return resident.iterator(strategy)


class ResidentIterator:
    """One run's position in resident data; the loop program gathers its batches.

    `LoopProgram` passes `inputs` and `position` to its resident loop, which
    reads batches through a `Cursor`, and then `advance`s the position by the
    batches the loop read. `next()` gives one element eagerly (an eager
    program, or a training program's first step).

    Attributes:
        inputs: The device tensors: `data`, `positions`, `signals`, `seed`, `shuffled`.
        static: What the loop's trace depends on besides shapes.
        position: Batches read so far (from the first pass's start).
    """

    def __init__(self, inputs: dict, static: Static, strategy, position: int) -> None:
        self.inputs = inputs
        self.static = static
        self.position = position
        self._strategy = strategy
        self._spec = None

    @property
    def element_spec(self):
        """The spec of the elements (per replica where there are several), as a stream's."""
        if self._spec is None:
            cursor = self.cursor(tf.constant(self.position, tf.int64))
            element, _ = cursor.next_element(cursor.start())
            self._spec = tf.nest.map_structure(tf.type_spec_from_value, element)
        return self._spec

    def input_specs(self):
        """Specs of `inputs` with the row and batch counts left open (one trace for any arrays)."""

        def open_rows(tensor):
            return tf.TensorSpec([None] + tensor.shape.as_list()[1:], tensor.dtype)

        return {
            "data": tf.nest.map_structure(open_rows, self.inputs["data"]),
            "positions": open_rows(self.inputs["positions"]),
            "signals": tf.nest.map_structure(open_rows, self.inputs["signals"]),
            "seed": tf.TensorSpec([], tf.int64),
            "shuffled": tf.TensorSpec([], tf.bool),
        }

    def cursor(self, start: tf.Tensor, inputs: dict | None = None) -> Cursor:
        """The cursor a loop reads batches through, from batch `start`."""
        return Cursor(inputs or self.inputs, start, self.static, self._strategy)

    def advance(self, batches: int) -> None:
        """Moves past `batches` batches the loop read."""
        self.position += batches

    def __iter__(self) -> ResidentIterator:
        return self

    def __next__(self):
        cursor = self.cursor(tf.constant(self.position, tf.int64))
        element, _ = cursor.next_element(cursor.start())
        self.position += 1
        return element


class Cursor:
    """Reads batches of resident data inside a loop, its position carried as loop state.

    Args:
        inputs: `ResidentIterator.inputs` (tensors of the trace).
        start: The first batch to read (an int64 tensor).
        static: Batch size, endless.
        strategy: The strategy whose replicas get the shares of each batch.
    """

    def __init__(self, inputs: dict, start: tf.Tensor, static: Static, strategy) -> None:
        self._inputs = inputs
        self._start = start
        self._static = static
        self._strategy = strategy
        self._rows = tf.shape(tf.nest.flatten(inputs["data"])[0], out_type=tf.int64)[0]
        self._steps = tf.shape(inputs["positions"], out_type=tf.int64)[0]

    @tf.autograph.experimental.do_not_convert  # explicit `tf.cond`s: nothing to convert
    def start(self) -> tuple:
        """The loop state before the first read: the batch, the pass's order, its pass."""
        return self._start, tf.zeros([self._rows], tf.int64), tf.constant(-1, tf.int64)

    def _permutation(self, pass_index: tf.Tensor) -> tf.Tensor:
        # As infeed._permutation, so both infeeds give the same rows for the same seed.
        seed = tf.stack([self._inputs["seed"], pass_index])
        order = tf.range(self._rows, dtype=tf.int64)
        return tf.random.experimental.stateless_shuffle(order, seed=seed)

    @tf.autograph.experimental.do_not_convert
    def next_element(self, state: tuple) -> tuple[Any, tuple]:
        """Returns the batch at `state` as `(data, signals)` and the state after it."""
        batch, order, order_pass = state
        if self._static.endless:
            index = batch % self._steps
        else:
            index = tf.minimum(batch, self._steps - 1)
        rows = tf.gather(self._inputs["positions"], index)
        # Shuffling is a tensor, not part of the trace: a fit with and one without share it.
        shuffled = self._inputs["shuffled"]
        pass_index = batch // self._steps
        order = tf.cond(
            shuffled & tf.not_equal(pass_index, order_pass),
            lambda: self._permutation(pass_index),
            lambda: order,
        )
        order_pass = pass_index
        rows = tf.cond(shuffled, lambda: tf.gather(order, rows), lambda: rows)
        signals = {name: tf.gather(value, index) for name, value in self._inputs["signals"].items()}
        if not self._static.endless:
            past = batch >= self._steps  # after the one pass: a stop batch
            stop = padding.stop_signals(self._static.batch_size)
            signals = {name: tf.where(past, stop[name], v) for name, v in signals.items()}
        element = self._distributed(rows, signals)
        return element, (batch + 1, order, order_pass)

    def _distributed(self, rows: tf.Tensor, signals: dict):
        data = self._inputs["data"]
        replicas = self._strategy.num_replicas_in_sync
        if replicas == 1:
            return tf.nest.map_structure(lambda t: tf.gather(t, rows), data), signals
        share = self._static.batch_size // replicas
        order = padding.replica_order(
            tf.cast(tf.reduce_sum(signals["mask"]), tf.int32), self._static.batch_size, replicas
        )
        rows = tf.gather(rows, order)
        signals = {name: tf.gather(value, order) for name, value in signals.items()}

        def replica_share(context: tf.distribute.experimental.ValueContext):
            # Contiguous shares, replica 0 first, real rows as a distributed dataset splits them.
            begin = context.replica_id_in_sync_group * share
            mine = rows[begin : begin + share]
            return (
                tf.nest.map_structure(lambda t: tf.gather(t, mine), data),
                {name: v[begin : begin + share] for name, v in signals.items()},
            )

        return self._strategy.experimental_distribute_values_from_function(replica_share)


def _owner(array: np.ndarray) -> Any:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.base if array.base is not None else array


def fingerprint(array: np.ndarray) -> int:
    """A cheap checksum of `array`: shape, dtype and up to `_SAMPLED_ROWS` rows spread over it."""
    rows = len(array)
    sample = np.unique(np.linspace(0, max(rows - 1, 0), min(rows, _SAMPLED_ROWS)).astype(int))
    picked = np.ascontiguousarray(array[sample]) if rows else array
    return zlib.crc32(picked.tobytes(), zlib.crc32(repr((array.shape, array.dtype)).encode()))


class _DeviceCache:
    """The device copies of recently used arrays, kept while the arrays live and are unchanged.

    At most `_CACHE_ENTRIES` copies of at most `budget_bytes()` in all; the
    least recently used go first.
    """

    def __init__(self) -> None:
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def tensor(self, array: np.ndarray) -> tf.Tensor:
        """Returns `array` on the device: the cached copy if it is unchanged, else a new copy."""
        try:
            owner = weakref.ref(_owner(array))
        except TypeError:  # memory owned by an object without weak references
            return _to_device(array)
        key = (
            array.__array_interface__["data"][0],
            array.shape,
            array.strides,
            array.dtype.str,
        )
        mark = fingerprint(array)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is not None and entry[1] == mark:
            self._entries.move_to_end(key)
            return entry[2]
        tensor = _to_device(array)
        self._entries[key] = (owner, mark, tensor)
        self._entries.move_to_end(key)
        weakref.finalize(owner(), self._entries.pop, key, None)
        budget = budget_bytes()
        while len(self._entries) > 1 and (
            len(self._entries) > _CACHE_ENTRIES
            or sum(e[2].shape.num_elements() * e[2].dtype.size for e in self._entries.values())
            > budget
        ):
            self._entries.popitem(last=False)
        return tensor

    def clear(self) -> None:
        """Drops every device copy."""
        self._entries.clear()


def _to_device(array: np.ndarray) -> tf.Tensor:
    # identity: the copy on the default device (an accelerator's memory where there is one).
    return tf.identity(tf.convert_to_tensor(array))


_CACHE = _DeviceCache()
