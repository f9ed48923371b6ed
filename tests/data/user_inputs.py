"""The sources the adapters' end-to-end tests feed: generators and PyDatasets of rows in batches."""

from __future__ import annotations

import itertools
import threading

import keras
import numpy as np
from conftest import compile_args, tiny_model

import tpufit

ROWS, BATCH = 100, 16


def compiled(model=None, **kwargs):
    tm = tpufit.TPUModel(model or tiny_model(), iterations_per_loop=3, **kwargs)
    tm.compile(**compile_args())
    return tm


def assert_same_logs(ours, theirs, rtol=1e-5):
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=rtol, err_msg=name)


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def batches(x, y=None, size=BATCH, sizes=None):
    """A generator of `(x, y)` (or `(x,)`) batches of `size` rows, or of the given `sizes`."""
    bounds = list(itertools.accumulate(sizes or [size] * -(-len(x) // size), initial=0))
    for start, stop in itertools.pairwise(bounds):
        yield (x[start:stop],) if y is None else (x[start:stop], y[start:stop])


class Batches(keras.utils.PyDataset):
    """A PyDataset of the rows in batches of 16 (the last short), recording its calls."""

    def __init__(self, x, y=None, batches=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y
        self.batches = batches
        self.epochs_ended = 0
        self.threads: set[str] = set()

    def __len__(self):
        return -(-len(self.x) // BATCH) if self.batches is None else self.batches

    @property
    def num_batches(self):
        return None if self.batches == -1 else len(self)

    def __getitem__(self, index):
        self.threads.add(threading.current_thread().name)
        index %= -(-len(self.x) // BATCH)
        rows = slice(index * BATCH, (index + 1) * BATCH)
        return self.x[rows] if self.y is None else (self.x[rows], self.y[rows])

    def on_epoch_end(self):
        self.epochs_ended += 1
