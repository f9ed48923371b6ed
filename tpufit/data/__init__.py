"""The data stage: every input a Keras user has, turned into one `Infeed`.

`build_infeed` is the stage's front door and its one dispatch: it recognises
the kind of input (`kinds.kind_of`) and hands it to that kind's adapter,
with the run's `InfeedRequest` as the only way options reach it.

| input | kind | adapter |
| --- | --- | --- |
| numpy arrays (nested in dicts / lists / tuples) | `"arrays"` | `arrays.py` |
| ragged and sparse tensors, scipy sparse | `"arrays"` | `arrays.py`, `composite.py` |
| pandas DataFrame / Series (or dicts / lists of them) | `"arrays"` | `arrays.py`, `tables.py` |
| `tf.data.Dataset` | `"dataset"` | `datasets.py` |
| Python generator (any one-shot iterator) | `"generator"` | `generators.py` |
| `keras.utils.PyDataset` | `"py_dataset"` | `py_datasets.py` |
| `input_fn(ctx)` | `"input_fn"` | `input_fns.py` |
| a distributed dataset (one worker) | `"distributed_dataset"` | `distributed.py`, `input_fns.py` |

Every adapter ends in `infeed.py`'s stream builders; `sharding.py` then sets
the auto-shard policy of the kind. `class_weight` is checked once, here, and
becomes per-row sample weights on the way (`weighting.py`). Everything here
runs on the host before any device work, so a bad input raises a `tpufit`
error with nothing traced and the weights unchanged; that includes data the
model cannot take (strings for a numeric input, a missing input, a wrong
shape), which `expected.py` finds from the built stream's element spec. `fit`'s validation data
is unpacked or split off by `validation_data.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from tpufit.data import (
    arrays,
    datasets,
    distributed,
    generators,
    input_fns,
    kinds,
    py_datasets,
    sharding,
    weighting,
)
from tpufit.data.infeed import DEFAULT_BATCH_SIZE, Infeed
from tpufit.data.input_fns import input_fn_as_x
from tpufit.data.kinds import kind_of
from tpufit.data.request import InfeedRequest
from tpufit.data.sharding import distribute
from tpufit.data.validation_data import split_for_validation, unpack_validation_data

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Infeed",
    "InfeedRequest",
    "build_infeed",
    "distribute",
    "input_fn_as_x",
    "kind_of",
    "split_for_validation",
    "unpack_validation_data",
]

_ADAPTERS = {
    kinds.ARRAYS: arrays.build,
    kinds.DATASET: datasets.build,
    kinds.GENERATOR: generators.build,
    kinds.PY_DATASET: py_datasets.build,
    kinds.INPUT_FN: input_fns.build,
    kinds.DISTRIBUTED: distributed.build,
}


def build_infeed(
    x: Any,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> Infeed:
    """Checks what the user passed to `fit` / `evaluate` / `predict` and builds its infeed.

    Args:
        x: Any input of the table above.
        y: Targets, for arrays and DataFrames only.
        sample_weight: Per-row weights, for arrays and DataFrames only.
        request: What the run asks of its input.
        strategy: The strategy the infeed feeds.

    Returns:
        The `Infeed`, carrying the request's mode and layout.

    Raises:
        InvalidArgumentError: A bad input or option, or data the model's
            inputs or loss cannot take (`request.expected`); nothing has
            touched a device yet.
        InvalidTypeError: Strings for a numeric input of the model, or the reverse.
    """
    class_weight = weighting.check_class_weight(request.class_weight)
    request = dataclasses.replace(request, class_weight=class_weight)
    kind = kind_of(x)
    feed = _ADAPTERS[kind](x, y, sample_weight, request, strategy)
    if request.expected is not None:
        request.expected.check_element(feed.dataset.element_spec[0])
    feed = sharding.with_known_steps(feed, request, strategy)
    return sharding.with_auto_shard_policy(feed, kind)
