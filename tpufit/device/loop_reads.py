"""How a loop program reads its batches and times itself, inside its trace.

A loop reads each batch through a source: a `Stream` over a distributed
iterator, or a `resident.Cursor` over resident data. Around each read and
each step it takes `tf.timestamp`s (`next_timed`, `timed`), chained by control
dependencies so that each covers the read or the step alone.
"""

from __future__ import annotations

import tensorflow as tf


def tensors(*values) -> list:
    """The tensors of `values`, composites expanded; `None` (an optional input left out) skipped."""
    return [v for v in tf.nest.flatten(values, expand_composites=True) if v is not None]


def rebuilt(like, held: list):
    """The element whose `tensors` are `held`, structured as `like` (with its `None`s).

    A batch carried from one loop iteration to the next is carried as its
    tensors: no loop variable can be `None`.
    """
    remaining = iter(held)
    leaves = tf.nest.flatten(like, expand_composites=True)
    leaves = [None if leaf is None else next(remaining) for leaf in leaves]
    return tf.nest.pack_sequence_as(like, leaves, expand_composites=True)


class Stream:
    """A distributed iterator read as a `resident.Cursor` is: its position is its own.

    Args:
        iterator: The distributed iterator.
    """

    def __init__(self, iterator) -> None:
        self._iterator = iterator

    def start(self) -> tf.Tensor:
        """The loop state before the first read (none: the iterator keeps its own)."""
        return tf.constant(0)

    def next_element(self, position):
        """Returns the next element and `position`, unchanged."""
        return next(self._iterator), position


def next_timed(source, position, clock: tf.Tensor, waited: tf.Tensor):
    """Reads the next element after `clock`.

    The wait is the `get_next` call (or the resident gather) alone: from
    asking (after the previous step and the loop's own bookkeeping) until
    the batch is there.

    Args:
        source: A `Stream` or `resident.Cursor`.
        position: The source's loop state.
        clock: When the previous step ended.
        waited: The loop's input time so far.

    Returns:
        The element, the position after it, when it came, and `waited` plus the wait.
    """
    with tf.control_dependencies([clock]):
        asked = tf.timestamp()
    with tf.control_dependencies([asked]):
        element, position = source.next_element(position)
    with tf.control_dependencies(tensors(element)):
        ready = tf.timestamp()
    return element, position, ready, waited + (ready - asked)


def timed(computed: tf.Tensor, ready: tf.Tensor, *step_outputs):
    """Adds a step's run time (from its batch being there until its outputs exist).

    Returns:
        `computed` plus the step's time, and when the step ended.
    """
    with tf.control_dependencies(tensors(*step_outputs)):
        now = tf.timestamp()
    return computed + (now - ready), now
