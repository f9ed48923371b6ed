"""Tests of tpufit/run/passes.py: epochs walk the passes over the data as Keras 3's do.

The host-side arithmetic is checked against `keras_walk`, Keras 3's
`EpochIterator` algorithm for data of known size (one step per execution),
written out here; fits of plain Keras code through `tpufit.attach` are
compared with plain Keras end to end.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import side_by_side, tiny_data, warned
from hypothesis import given, settings
from hypothesis import strategies as st

import tpufit
from tpufit.attach import attached
from tpufit.config import Layout, Mode
from tpufit.data import dataset_stream, infeed
from tpufit.device.outfeed import LoopResult
from tpufit.run import passes
from tpufit.run.epochs import EpochIterator
from tpufit.run.loop_length import LoopLength
from tpufit.run.passes import Passes, Walk

FAST = settings(max_examples=200, deadline=None)
RAN_OUT = "Your input ran out of data"


def keras_walk(pass_steps: int, steps_per_epoch: int | None, epochs: int) -> list[tuple[int, bool]]:
    """Each epoch's steps and whether it warned, as Keras 3 walks data of `pass_steps` batches.

    Keras keeps its iterator across epochs: an epoch stops where the pass
    ends (warning if it wanted more), and the next starts a new pass.
    """
    seen, walked = 0, []
    for _ in range(epochs):
        ran, short = 0, False
        for _ in range(steps_per_epoch or pass_steps):
            if seen >= pass_steps:
                short = steps_per_epoch is not None
                break
            seen, ran = seen + 1, ran + 1
        if seen >= pass_steps:
            seen = 0
        walked.append((ran, short))
    return walked


def tpufit_walk(data: Passes, epochs: int) -> list[tuple[int, bool]]:
    walk, walked = Walk(data, None), []
    for _ in range(epochs):
        span = walk.span()
        walk.advance(span, span.steps, ran_out=False)
        walked.append((span.steps, passes.ran_short(span, span.steps, ran_out=False)))
    return walked


pass_steps = st.integers(1, 40)
steps_per_epoch = st.none() | st.integers(1, 50)


@FAST
@given(pass_steps, steps_per_epoch, st.integers(1, 12), st.booleans())
def test_epochs_take_their_steps_from_the_current_pass_as_keras_does(n, s, epochs, tail):
    assert tpufit_walk(Passes(n, tail, s), epochs) == keras_walk(n, s, epochs)


@FAST
@given(pass_steps, steps_per_epoch, st.integers(0, 12), st.booleans(), st.data())
def test_a_resumed_run_skips_exactly_what_the_epochs_before_read(n, s, epoch, tail, data):
    steps = Passes(n, tail, s)
    walk, main, tails = Walk(steps, None), 0, 0
    for _ in range(epoch):
        span = walk.span()
        walk.advance(span, span.steps, ran_out=False)
        main, tails = main + span.main, tails + span.tail
    span = walk.span()
    assert steps.epoch_start(epoch)[1] == walk.step == span.start
    step = data.draw(st.integers(0, span.steps - 1))
    assert steps.batches_before(epoch, step) == (main + step, tails)


@FAST
@given(pass_steps, steps_per_epoch, st.integers(0, 6), st.integers(0, 300), st.data())
def test_max_steps_asks_for_the_epoch_in_which_the_budget_runs_out(n, s, epoch, budget, data):
    steps = Passes(n, False, s)
    lengths = steps.lengths(epoch)
    first = next(lengths)
    step = data.draw(st.integers(0, first - 1))
    epochs, trained, left = epoch + 1, 0, first - step
    while trained + left < budget:
        trained, epochs, left = trained + left, epochs + 1, next(lengths)
    assert passes.epochs_until(steps, budget, 0, epoch, step) == epochs


def test_data_of_unknown_length_gives_epochs_of_steps_per_epoch_or_one_endless_epoch():
    assert Passes(None, False, 5).span(10) == passes.Span(10, 5, 5, False, False)
    assert Passes(None, False, None).span(0).steps is None
    assert passes.epochs_until(Passes(None, False, None), 10**9, 0, 0, 0) == 1
    assert Passes(None, False, 5).batches_before(3, 2) == (17, 0)


def test_an_infeeds_passes_count_its_tail_and_a_pass_with_no_step_is_a_tpufit_error():
    x, y = tiny_data(76)
    data = infeed.pack_arrays(x, y)
    padded = infeed.from_arrays(data, 8, mode=Mode.TRAIN, layout=Layout.PADDED)
    true_size = infeed.from_arrays(data, 8, mode=Mode.TRAIN, layout=Layout.TRUE_SIZE)
    assert passes.of_feed(padded, None) == Passes(10, False, None)
    assert passes.of_feed(true_size, 4) == Passes(10, True, 4)
    endless = dataset_stream.from_dataset(
        tf.data.Dataset.from_tensors((x, y)).repeat(), mode=Mode.TRAIN, layout=Layout.PADDED
    )
    assert passes.of_feed(endless, 3) == Passes(None, False, 3)
    dropped = infeed.from_arrays(
        data, 100, mode=Mode.TRAIN, layout=Layout.TRUE_SIZE, drop_remainder=True
    )
    with pytest.raises(tpufit.InvalidArgumentError, match="drop_remainder"):
        passes.of_feed(dropped, None, drop_remainder=True)


class FoundAsRead:
    """A `Lookahead` over a pass of `steps` steps, which it tells only as far as asked."""

    def __init__(self, steps: int, repeats: bool):
        self.steps, self.repeats = steps, repeats

    def steps_within(self, steps: int) -> int:
        return min(steps, self.steps)


def run_epoch(span, loops_of: int, available) -> EpochIterator:
    """Walks one training epoch as `fit_loop` does; training loops run every step asked."""
    loops = EpochIterator(span.main, LoopLength(loops_of), tail=span.tail, available=available)
    for loop in loops:
        loops.ran(LoopResult({}, {}, loop.steps, False))
    return loops


@FAST
@given(pass_steps, steps_per_epoch, st.integers(1, 12), st.integers(1, 8))
def test_a_pass_found_as_it_is_read_walks_like_one_of_known_length(n, s, epochs, loops_of):
    walk, walked = Walk(Passes(None, False, s), FoundAsRead(n, repeats=True)), []
    for _ in range(epochs):
        span = walk.span()
        loops = run_epoch(span, loops_of, walk.available(span))
        walk.advance(span, loops.steps_done, loops.ran_out)
        walked.append((loops.steps_done, passes.ran_short(span, loops.steps_done, loops.ran_out)))
    assert walked == keras_walk(n, s, epochs)
    assert walk.passes.steps == (n if s is None or epochs * s >= n else None)


def test_a_one_shot_source_is_exhausted_once_its_pass_ended():
    walk = Walk(Passes(None, False, 4), FoundAsRead(6, repeats=False))
    for expected in (4, 2):
        assert not walk.exhausted
        span = walk.span()
        loops = run_epoch(span, 3, walk.available(span))
        assert loops.steps_done == expected
        walk.advance(span, loops.steps_done, loops.ran_out)
    assert walk.exhausted and walk.passes.steps == 6


# --- end to end: plain Keras code through tpufit.attach, against plain Keras ---------------


class StepsSeen(keras.callbacks.Callback):
    """Counts the steps each epoch's batch events cover (`end - begin + 1` per event)."""

    def on_train_begin(self, logs=None):
        self.epochs: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(0)

    def on_train_batch_begin(self, batch, logs=None):
        self.begin = batch

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1] += batch - self.begin + 1


def assert_same_fit(ours, theirs, *, rtol=1e-5):
    np.testing.assert_allclose(
        ours.result.history["loss"], theirs.result.history["loss"], rtol=rtol
    )
    for a, b in zip(ours.model.get_weights(), theirs.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6)
    assert warned(ours, RAN_OUT) == warned(theirs, RAN_OUT)


X, Y = tiny_data(76)  # batches of 8: 9 full and one of 4, 10 steps a pass


def arrays():
    return {"x": X, "y": Y, "batch_size": 8}


def dataset():
    return {"x": tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)}


@pytest.mark.parametrize("source", [arrays, dataset])
@pytest.mark.parametrize("steps", [4, 5, 9, 11, None])
def test_steps_per_epoch_smaller_or_larger_than_the_data_trains_as_keras(source, steps):
    seen = {}

    def body(model):
        seen[model] = StepsSeen()
        fit_args = dict(epochs=4, steps_per_epoch=steps, shuffle=False, callbacks=[seen[model]])
        return model.fit(**source(), **fit_args, verbose=0)

    theirs, ours = side_by_side(body, iterations_per_loop=3)
    assert_same_fit(ours, theirs)
    assert seen[ours.model].epochs == seen[theirs.model].epochs
    assert seen[theirs.model].epochs == [n for n, _ in keras_walk(10, steps, 4)]


def test_the_partial_batch_at_its_true_size_ends_the_pass_in_whichever_epoch_reaches_it():
    def batch_norm_model():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input((X.shape[1],)), keras.layers.BatchNormalization(), keras.layers.Dense(3)]
        )

    def body(model):
        return model.fit(X, Y, batch_size=8, epochs=5, steps_per_epoch=4, shuffle=False, verbose=0)

    theirs, ours = side_by_side(body, iterations_per_loop=3, make_model=batch_norm_model)
    assert attached(ours.model).layouts["train"].layout.value == "true_size"
    assert_same_fit(ours, theirs)
    assert len(warned(ours, RAN_OUT)) == 1  # epochs of 4, 4, 2 | 4, 4
