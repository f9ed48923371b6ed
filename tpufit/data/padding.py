"""Padding, masks and stopping signals (small pure functions), and collecting a predict's real rows.

Every batch that reaches a device program has the same static size `B`. A short
batch (the end of the data) is filled up to `B` with copies of its own real rows
(copies, not zeros, so that padding never feeds a NaN or an out-of-range index
into the model) and travels with *signals*, one entry per row:

- `mask`: 1.0 for a real row, 0.0 for padding;
- `real_rows`: the number of real rows in the whole (global) batch, as a float,
  repeated on every row so that each replica sees it after the batch is split;
- `stop`: True on the batches appended after the data ends (TPUEstimator's
  stopping signal); a program that reads one stops without running the step.

Padding always sits at the tail of a global batch, so after the batch is split
over replicas, each replica's real rows are a prefix of its rows.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tpufit.data import composite

Signals = dict[str, tf.Tensor]


def num_batches(num_rows: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Returns how many batches `num_rows` rows make.

    Example:
        >>> num_batches(1001, 64), num_batches(1001, 64, drop_remainder=True)
        (16, 15)
    """
    if drop_remainder:
        return num_rows // batch_size
    return -(-num_rows // batch_size)


def make_signals(real_rows: tf.Tensor, batch_size: int) -> Signals:
    """Returns the signals of a batch of `batch_size` rows whose first `real_rows` are real."""
    real_rows = tf.cast(real_rows, tf.int32)
    positions = tf.range(batch_size, dtype=tf.int32)
    return {
        "mask": tf.cast(positions < real_rows, tf.float32),
        "real_rows": tf.fill([batch_size], tf.cast(real_rows, tf.float32)),
        "stop": tf.zeros([batch_size], tf.bool),
    }


def stop_signals(batch_size: int) -> Signals:
    """Returns the signals of a stop batch: no real rows, `stop` set."""
    signals = make_signals(0, batch_size)
    signals["stop"] = tf.ones([batch_size], tf.bool)
    return signals


def fill_positions(real_rows: tf.Tensor, batch_size: int) -> tf.Tensor:
    """Returns, for each of `batch_size` rows, which real row fills it.

    Real rows keep their place; padding rows cycle through the real rows.

    Example:
        >>> fill_positions(3, 5).numpy().tolist()
        [0, 1, 2, 0, 1]
    """
    return tf.range(batch_size, dtype=tf.int32) % tf.cast(real_rows, tf.int32)


def replica_order(real_rows: tf.Tensor, batch_size: int, replicas: int) -> tf.Tensor:
    """The order of a padded batch's rows that gives each replica the real rows TF would.

    A distributed dataset splits a batch of `n` rows over the replicas in
    contiguous shares of `ceil(n / replicas)` rows, replica 0 first (7 rows
    on 4 replicas: 2, 2, 2, 1). A padded batch holds its `n` real rows first,
    so split as it is, replica 0 would get them all. Taken in this order,
    each replica's share of the padded batch starts with the real rows TF
    gives that replica, then padding: state each replica keeps for itself
    (BatchNormalization's moving statistics in Keras) sees the rows it sees
    in Keras. A full batch keeps its order.

    Args:
        real_rows: The real rows `n` at the front of the batch.
        batch_size: The padded batch's rows, a multiple of `replicas`.
        replicas: The replicas the batch is split over.

    Returns:
        A permutation of `range(batch_size)`: row `j` of the reordered batch
        is row `order[j]` of the padded one.

    Example:
        >>> replica_order(7, 16, 4).numpy().tolist()
        [0, 1, 7, 8, 2, 3, 9, 10, 4, 5, 11, 12, 6, 13, 14, 15]
    """
    slot = tf.range(batch_size, dtype=tf.int32)
    share = batch_size // replicas
    replica, offset = slot // share, slot % share
    real_rows = tf.cast(real_rows, tf.int32)
    per_replica = (real_rows + replicas - 1) // replicas
    first = replica * per_replica
    mine = tf.clip_by_value(real_rows - first, 0, per_replica)
    real_before = tf.minimum(first, real_rows) + tf.minimum(offset, mine)
    order = tf.where(offset < mine, first + offset, real_rows + slot - real_before)
    # A full batch (of any size: a dataset's own may not divide by the replicas) as it is.
    return tf.where(real_rows < batch_size, order, slot)


def in_replica_order(data, signals: Signals, replicas: int):
    """`(data, signals)` of one padded batch, rows reordered by `replica_order`.

    A full batch is passed through as it is, without copying its rows.
    """
    mask = signals["mask"]
    size = int(mask.shape[0]) if mask.shape[0] is not None else tf.shape(mask)[0]
    real_rows = tf.cast(tf.reduce_sum(mask), tf.int32)

    def reordered():
        order = replica_order(real_rows, size, replicas)
        return tf.nest.map_structure(
            lambda t: None if t is None else composite.gather_rows(t, order), (data, signals)
        )

    result = tf.cond(real_rows < size, reordered, lambda: (data, signals))
    if not isinstance(size, int):
        return result
    # The cond forgets a ragged batch's static row count, which TF needs to split it evenly.
    return tf.nest.map_structure(
        lambda new, old: None if old is None else composite.with_rows(new, old, size),
        result,
        (data, signals),
    )


def pad_batch(batch, batch_size: int):
    """Pads a nested batch of up to `batch_size` rows to exactly `batch_size` rows.

    Args:
        batch: A nested structure of tensors sharing their first dimension.
        batch_size: The static size to pad to.

    Returns:
        `(padded_batch, signals)`; every tensor of `padded_batch` has the static
        first dimension `batch_size`.
    """
    leaves = tf.nest.flatten(batch)
    real_rows = composite.rows_of(leaves[0])

    def pad_all():
        too_many = tf.debugging.assert_less_equal(
            real_rows,
            batch_size,
            message=(
                f"A batch has more rows than the batch size {batch_size} (a dataset's "
                "batch size is its first batch's). Pass batch_size= to re-cut the batches."
            ),
        )
        with tf.control_dependencies([too_many]):
            positions = fill_positions(real_rows, batch_size)
        return [composite.gather_rows(leaf, positions) for leaf in leaves]

    padded = tf.cond(
        tf.equal(real_rows, batch_size), lambda: [tf.identity(v) for v in leaves], pad_all
    )
    pairs = zip(leaves, padded, strict=True)
    padded = [composite.with_rows(value, leaf, batch_size) for leaf, value in pairs]
    return tf.nest.pack_sequence_as(batch, padded), make_signals(real_rows, batch_size)


def pass_layout(num_rows: int, batch_size: int, pad: bool) -> tuple[np.ndarray, dict]:
    """Lays one pass over `num_rows` rows out as batches, padding the last if asked.

    Computed once on the host for in-memory data: each pass then only
    permutes rows and gathers them, with no per-batch padding work.

    Args:
        num_rows: Rows in the pass.
        batch_size: Rows per batch.
        pad: Pad the partial last batch (with copies of its own rows); else
            leave it out.

    Returns:
        `(positions, signals)`: `positions[k, j]` is the row (0 to
        `num_rows - 1`) that fills row `j` of batch `k`; `signals` holds numpy
        arrays shaped `[batches, batch_size]`, as `make_signals` gives per batch.

    Example:
        >>> positions, signals = pass_layout(5, 3, pad=True)
        >>> positions.tolist(), signals["mask"].tolist()
        ([[0, 1, 2], [3, 4, 3]], [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    """
    batches = num_batches(num_rows, batch_size, drop_remainder=not pad)
    flat = np.arange(batches * batch_size)
    batch, row = np.divmod(flat, batch_size)
    real = np.minimum(batch_size, num_rows - batch * batch_size)
    positions = batch * batch_size + row % real
    shape = (batches, batch_size)
    signals = {
        "mask": (row < real).astype(np.float32).reshape(shape),
        "real_rows": real.astype(np.float32).reshape(shape),
        "stop": np.zeros(shape, bool),
    }
    return positions.reshape(shape), signals


def real_rows(outputs, mask: np.ndarray):
    """Returns the rows of `outputs` (nested arrays, rows first) whose `mask` is 1, in order."""
    keep = np.asarray(mask) > 0.5
    return tf.nest.map_structure(lambda a: composite.compress(a, keep), outputs)


class RowCollector:
    """Collects a predict's outputs loop by loop, keeping only the real rows, in order.

    With the number of real rows known (arrays), the result is allocated once
    and each loop's real rows are written into it as the loop returns, so the
    loop's own buffers can be freed at once: peak memory stays near the
    result's size, not two or three times it (padded pieces, their
    concatenation, then the unpadded copy). Otherwise the real rows of each
    loop are kept and joined at the end.

    Args:
        rows: The number of real rows, or `None` when unknown.
    """

    def __init__(self, rows: int | None = None) -> None:
        self._rows = rows
        self._pieces: list = []
        self._result = None
        self._filled = 0

    def add(self, outputs, mask: np.ndarray):
        """Takes one loop's outputs (rows first) and its mask (1 for real rows).

        Returns:
            The loop's real rows (a view into the result when it is preallocated).
        """
        if self._rows is None or composite.any_composite(outputs):
            # Ragged and sparse rows have no preallocated place: they are joined at the end.
            self._rows = None
            self._pieces.append(real_rows(outputs, mask))
            return self._pieces[-1]
        keep = np.asarray(mask) > 0.5
        count = int(np.count_nonzero(keep))
        if self._result is None:
            self._result = tf.nest.map_structure(
                lambda a: np.empty((self._rows,) + a.shape[1:], a.dtype), outputs
            )
        end = self._filled + count
        tf.nest.map_structure(
            lambda a, out: np.compress(keep, a, axis=0, out=out[self._filled : end]),
            outputs,
            self._result,
        )
        start, self._filled = self._filled, end
        return tf.nest.map_structure(lambda out: out[start:end], self._result)

    def result(self, *, complete: bool = True):
        """The real rows of every loop, in order.

        Args:
            complete: Whether every row was predicted; `False` for a run
                stopped early, which returns the rows it collected.
        """
        if self._rows is None:
            return tf.nest.map_structure(lambda *parts: composite.concat(parts), *self._pieces)
        if complete and self._filled != self._rows:
            raise ValueError(f"collected {self._filled} real rows where {self._rows} were expected")
        return tf.nest.map_structure(lambda out: out[: self._filled], self._result)


def nearest_valid_batch_sizes(batch_size: int, num_replicas: int) -> tuple[int, int]:
    """Returns the multiples of `num_replicas` just below and just above `batch_size`.

    Example:
        >>> nearest_valid_batch_sizes(10, 4)
        (8, 12)
    """
    below = max(num_replicas, batch_size // num_replicas * num_replicas)
    above = -(-batch_size // num_replicas) * num_replicas
    return below, above
