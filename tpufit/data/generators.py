"""The adapter of Python generators (and other one-shot iterators of batches).

A generator can be read only once. Its first batches are read ahead and
checked (`python_data.py`); a stream read in full more than once (training to
exhaustion over several epochs, validation data, evaluation on several
workers) is then read into host memory and fed as arrays; any other is
streamed through `tf.data`, re-cut to the static batch, with a probe of its
first batch to build the model's state from.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from tpufit import cluster, errors
from tpufit.config import Mode
from tpufit.data import checks, infeed, python_data, weighting
from tpufit.data.request import InfeedRequest


class GeneratorSource:
    """A generator's batches: the first ones read ahead and checked, the rest streamed.

    Args:
        generator: The user's generator (or iterator) of batches.

    Attributes:
        peeked: The batches read ahead, standardized.
        pipeline_errors: Every error raised about the batches, oldest first
            (those raised inside `tf.data` reach the host wrapped).
    """

    def __init__(self, generator: Iterator) -> None:
        self._generator = generator
        self.pipeline_errors: list = []
        self.peeked = [
            python_data.standardize(b)
            for b in itertools.islice(generator, python_data.PEEKED_BATCHES)
        ]
        if not self.peeked:
            raise errors.invalid_argument(
                "x", generator, "a generator that yields at least one batch", what="Empty generator"
            )
        self.checker = python_data.BatchChecker(self.peeked[0], "generator", self.pipeline_errors)
        for index, batch in enumerate(self.peeked[1:], start=1):
            self.checker.check(batch, index)
        self._batches = self._checked()

    def _checked(self) -> Iterator:
        for index, batch in enumerate(itertools.chain(self.peeked, self._generator)):
            yield self.checker.check(batch, index)

    def dataset(self, *, endless: bool) -> tf.data.Dataset:
        """The batches as one stream (it can be iterated once).

        With `endless`, the stream is marked infinite (training by
        `steps_per_epoch`) and running out is an error that says so.
        """
        batches = self._batches
        raised = self.pipeline_errors

        def stream():
            count = 0
            for batch in batches:
                count += 1
                yield batch
            if endless:
                error = errors.invalid_argument(
                    "steps_per_epoch",
                    "a number of steps",
                    "a generator that yields at least steps_per_epoch * epochs batches "
                    "(make it endless), or no steps_per_epoch to run each epoch to its end",
                    what=f"The generator ran out of data after {count} batches",
                )
                raised.append(error)
                raise error

        dataset = tf.data.Dataset.from_generator(
            stream, output_signature=self.checker.output_signature()
        )
        if endless:
            dataset = dataset.apply(
                tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
            )
        return dataset

    def read_all(self) -> Any:
        """Reads the rest of the generator and returns all its rows as one structure of arrays."""
        batches = list(self._batches)
        return tf.nest.map_structure(lambda *parts: np.concatenate(parts, axis=0), *batches)


def _arrays_with_class_weight(data: Any, class_weight: dict | None) -> Any:
    if class_weight is None:
        return data
    if not isinstance(data, tuple) or len(data) != 2:
        raise errors.invalid_argument(
            "class_weight",
            class_weight,
            "a generator of (x, y) batches: class weights need targets, and Keras "
            "allows no class_weight with sample weights",
        )
    x, y = data
    weighting.check_combination(y, None, class_weight)
    return x, y, weighting.sample_weights_for(y, class_weight)


def build(
    x: Iterator,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> infeed.Infeed:
    """Builds the infeed of a generator of batches.

    Args:
        x: The generator, yielding `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.
        y: Must be `None` (the generator yields the targets).
        sample_weight: Must be `None`.
        request: What the run asks; `batch_size` re-cuts the batches (by
            default the first batch's size is the static batch).
        strategy: The strategy the infeed feeds.

    Returns:
        The `Infeed`; its `pipeline_errors` is the source's.
    """
    checks.check_no_extras("generator", y, sample_weight)
    source = GeneratorSource(x)
    size = python_data.static_batch_size(
        request, source.peeked[:1], strategy.num_replicas_in_sync
    )
    endless = request.mode == Mode.TRAIN
    several_workers = cluster.worker_count(strategy) > 1
    if request.reread or (several_workers and not endless) or (endless and request.steps is None):
        # Read more than once (every epoch, every validation, every worker's count
        # of steps): hold it in memory.
        data = _arrays_with_class_weight(source.read_all(), request.class_weight)
        feed = infeed.from_arrays(data, size, mode=request.mode, layout=request.layout)
        return dataclasses.replace(feed, pipeline_errors=source.pipeline_errors)
    stream = weighting.with_class_weight(source.dataset(endless=endless), request.class_weight)
    feed = infeed.from_dataset(
        stream, mode=request.mode, layout=request.layout, batch_size=size, count=False
    )
    return dataclasses.replace(
        feed,
        probe=python_data.probe(source.peeked[0], request, size),
        pipeline_errors=source.pipeline_errors,
    )
