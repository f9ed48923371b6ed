"""`InfeedRequest`: what a run asks of its input, everything but the data itself.

The one way a run's options reach an input adapter (`tpufit.data.build_infeed`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tpufit.config import Layout, Mode
from tpufit.data.expected import Expected


@dataclasses.dataclass(frozen=True)
class InfeedRequest:
    """What a run asks of its input.

    Attributes:
        mode: The run's mode: `TRAIN` streams repeat pass after pass; `EVAL`
            and `PREDICT` streams make one pass, then repeat a stop batch.
        layout: How the partial last batch is laid out (decided once per run,
            by the step the run uses; see `tpufit.config.Layout`).
        batch_size: The global batch size: for arrays and `input_fn`s
            (default 32); for datasets and generators the size batches are
            re-cut to; for a `PyDataset` the size each batch is padded to
            (default: its first batches' largest).
        class_weight: `{class: weight}` as the user gave it, or `None`
            (`build_infeed` checks it once and hands the adapters the checked dict).
        shuffle: Reshuffle arrays each pass, and a `PyDataset`'s batches as Keras does.
        seed: The shuffle seed of arrays, used when `shuffle`.
        drop_remainder: Drop the partial last batch of arrays.
        steps: `steps_per_epoch` (train) or `steps` (eval / predict), when given.
        reread: The stream is read in full more than once (validation data).
        expected: What the model's step expects of the data (its inputs,
            targets for its loss), checked before any device work; `None`
            checks nothing.
    """

    mode: Mode
    layout: Layout
    batch_size: int | None = None
    class_weight: Any = None
    shuffle: bool = False
    seed: int | None = None
    drop_remainder: bool = False
    steps: int | None = None
    reread: bool = False
    expected: Expected | None = None

    @property
    def endless(self) -> bool:
        """Whether the stream repeats pass after pass (training)."""
        return self.mode is Mode.TRAIN

    @property
    def padded(self) -> bool:
        """Whether partial batches are padded to the static size."""
        return self.layout is Layout.PADDED

    @property
    def shuffle_seed(self) -> int | None:
        """The seed arrays are reshuffled with each pass, or `None` to keep their order."""
        return self.seed if self.shuffle else None
