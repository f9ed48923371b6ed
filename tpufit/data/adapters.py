"""Every input a Keras user has, turned into what the infeed takes.

| input | becomes |
| --- | --- |
| numpy arrays (nested in dicts / lists) | arrays (`infeed.from_arrays`) |
| pandas DataFrame / Series (or dicts of them) | arrays (`tables.py`) |
| `tf.data.Dataset` | itself (`infeed.from_dataset`) |
| Python generator | a stream re-cut to the static batch (in memory if read more than once) |
| `keras.utils.PyDataset` | a stream of its batches, one step each, padded to the static batch |
| `input_fn(ctx)` | one pipeline per worker (`input_fns.py`) |

`class_weight` becomes per-row sample weights (`weighting.py`) on the way.
Everything here runs on the host before any device work, so a bad input
raises a `tpufit` error with nothing traced and the weights unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tpufit import cluster, errors
from tpufit.data import checks as validation
from tpufit.data import infeed, input_fns, python_data, sharding, tables, weighting
from tpufit.data.request import InfeedRequest


def kind_of(x: Any) -> str:
    """Names the kind of `x`: "input_fn", "generator", "py_dataset", "dataset" or "arrays"."""
    if isinstance(x, tf.data.Dataset):
        return "dataset"
    if python_data.is_py_dataset(x):
        return "py_dataset"
    if python_data.is_generator(x):
        return "generator"
    if input_fns.is_input_fn(x):
        return "input_fn"
    return "arrays"


def _check_no_extras(kind: str, y: Any, sample_weight: Any) -> None:
    names = {"dataset": "tf.data.Dataset", "py_dataset": "PyDataset", "generator": "generator"}
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            source = names.get(kind, "input_fn")
            raise errors.invalid_argument(
                name,
                value,
                f"None when x is a {source} (it yields (x, y) or (x, y, sample_weight) itself)",
            )


def _static_batch(batch_size: int | None, batches: list, num_replicas: int) -> int:
    size = batch_size or max(python_data.rows_of(b) for b in batches)
    validation.check_batch_size(size, num_replicas)
    return size


def _with_class_weight(dataset: tf.data.Dataset, class_weight: dict | None) -> tf.data.Dataset:
    if class_weight is None:
        return dataset
    return weighting.add_to_dataset(dataset, class_weight)


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


def _from_generator(x, batch_size, *, mode, padded, num_replicas, class_weight, steps, reread):
    source = python_data.GeneratorSource(x)
    size = _static_batch(batch_size, source.peeked[:1], num_replicas)
    if reread or (mode == "train" and steps is None):
        # Read more than once (every epoch, or every validation): hold it in memory.
        data = _arrays_with_class_weight(source.read_all(), class_weight)
        return infeed.from_arrays(data, size, endless=mode == "train", padded=padded)
    stream = _with_class_weight(source.dataset(endless=mode == "train"), class_weight)
    feed = infeed.from_dataset(
        stream, endless=mode == "train", padded=padded, batch_size=size, count=False
    )
    probe = _with_class_weight(python_data.probe(source.peeked[0]), class_weight)
    probe = infeed.from_dataset(probe, endless=False, padded=padded, batch_size=size).dataset
    return dataclasses.replace(feed, probe=probe, pipeline_errors=source.checker.raised)


def _from_py_dataset(x, batch_size, *, mode, padded, num_replicas, class_weight, steps, shuffle):
    source = python_data.PyDatasetSource(x, shuffle=shuffle and mode == "train")
    if source.num_batches is None and steps is None:
        name = "steps_per_epoch" if mode == "train" else "steps"
        raise errors.invalid_argument(
            name, None, "a positive int when the PyDataset is endless (num_batches is None)"
        )
    size = _static_batch(batch_size, source.peeked, num_replicas)
    largest = max(python_data.rows_of(b) for b in source.peeked)
    if size < largest:
        raise errors.invalid_argument(
            "batch_size",
            batch_size,
            f"at least {largest} (the rows of the PyDataset's largest first batch): its "
            "batches are padded up to batch_size, never cut",
        )
    stream = _with_class_weight(source.dataset(), class_weight)
    feed = infeed.from_dataset(
        stream, endless=mode == "train", padded=padded, batch_size=size, count=False, rebatch=False
    )
    probe = _with_class_weight(python_data.probe(source.peeked[0]), class_weight)
    probe = infeed.from_dataset(
        probe, endless=False, padded=padded, batch_size=size, rebatch=False
    ).dataset
    return dataclasses.replace(feed, probe=probe, pipeline_errors=source.checker.raised)


def build_infeed(
    x: Any,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> infeed.Infeed:
    """Checks what the user passed to `fit` / `evaluate` / `predict` and builds its infeed.

    Args:
        x: Any input of the table above.
        y: Targets, for arrays and DataFrames only.
        sample_weight: Per-row weights, for arrays and DataFrames only.
        request: What the run asks of its input.
        strategy: The strategy the infeed feeds.

    Returns:
        The `Infeed`.
    """
    mode, padded, steps = str(request.mode), request.padded, request.steps
    batch_size, seed, shuffle = request.batch_size, request.seed, request.shuffle
    drop_remainder, reread = request.drop_remainder, request.reread
    class_weight = weighting.check_class_weight(request.class_weight)
    kind = kind_of(x)
    several_workers = cluster.worker_count(strategy) > 1
    if several_workers and mode != "train" and steps is None and kind == "input_fn":
        raise errors.invalid_argument(
            "steps",
            None,
            f"a positive int: with an input_fn each of the {cluster.worker_count(strategy)} "
            "workers reads its own shard, and every worker must run the same steps",
        )
    feed = _build(
        x,
        y,
        sample_weight,
        batch_size,
        kind,
        mode=mode,
        padded=padded,
        strategy=strategy,
        seed=seed,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
        class_weight=class_weight,
        steps=steps,
        reread=reread or (several_workers and mode != "train"),
    )
    if several_workers and mode != "train" and steps is None and feed.steps_per_pass is None:
        # Every worker must run the same known steps (no stop signal checks there).
        stream = feed.dataset.take_while(lambda data, signals: not signals["stop"][0])
        feed = dataclasses.replace(feed, steps_per_pass=infeed.count_batches(stream))
    return dataclasses.replace(feed, mode=request.mode, layout=request.layout)


def _build(
    x,
    y,
    sample_weight,
    batch_size,
    kind,
    *,
    mode,
    padded,
    strategy,
    seed,
    shuffle,
    drop_remainder,
    class_weight,
    steps,
    reread,
) -> infeed.Infeed:
    num_replicas = strategy.num_replicas_in_sync
    if kind != "arrays":
        _check_no_extras(kind, y, sample_weight)
        if batch_size is not None:
            validation.check_batch_size(batch_size, num_replicas)
    layout = dict(mode=mode, padded=padded, num_replicas=num_replicas)
    layout.update(class_weight=class_weight, steps=steps)
    if kind == "input_fn":
        return input_fns.from_input_fn(
            x,
            batch_size,
            mode=mode,
            padded=padded,
            strategy=strategy,
            class_weight=class_weight,
            steps=steps,
        )
    if kind == "generator":
        return _from_generator(x, batch_size, reread=reread, **layout)
    if kind == "py_dataset":
        return _from_py_dataset(x, batch_size, shuffle=shuffle, **layout)
    if kind == "dataset":
        feed = infeed.from_user_data(
            _with_class_weight(x, class_weight),
            None,
            None,
            batch_size,
            mode=mode,
            padded=padded,
            num_replicas=num_replicas,
        )
        return sharding.for_user_dataset(feed, mode)
    x, y, sample_weight = (
        tables.to_arrays(v, n) for v, n in ((x, "x"), (y, "y"), (sample_weight, "sample_weight"))
    )
    weighting.check_combination(y, sample_weight, class_weight)
    if class_weight is not None:
        validation.check_arrays(x=x, y=y)
        sample_weight = weighting.sample_weights_for(y, class_weight)
    return infeed.from_user_data(
        x,
        y,
        sample_weight,
        batch_size,
        mode=mode,
        padded=padded,
        num_replicas=num_replicas,
        seed=seed,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
    )


def input_fn_as_x(x: Any, input_fn: Any) -> Any:
    """TPUEstimator's `input_fn=` keyword means the same as passing the `input_fn` as `x`."""
    if input_fn is None:
        return x
    if x is not None:
        raise errors.invalid_argument("input_fn", input_fn, "either x or input_fn, not both")
    return input_fn


def unpack_validation_data(validation_data: Any, batch_size: int | None) -> tuple:
    """Returns `(x, y, sample_weight, batch_size)` from `fit`'s `validation_data`.

    A dataset, generator, `PyDataset` or `input_fn` keeps its own batches;
    arrays and DataFrames take `batch_size`.
    """
    if kind_of(validation_data) != "arrays":
        return validation_data, None, None, None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise errors.invalid_argument(
            "validation_data",
            validation_data,
            "a tuple (x_val, y_val) or (x_val, y_val, sample_weight_val), a tf.data.Dataset, "
            "a generator, a PyDataset or an input_fn",
        )
    x, y, *rest = validation_data
    return x, y, (rest[0] if rest else None), batch_size


def split_for_validation(x, y, sample_weight, split: float, validation_data):
    """Splits off the last `split` fraction of arrays or DataFrames to validate on, as Keras does.

    Returns:
        `(x, y, sample_weight, validation_data)`: the training part and the held-out part.
    """
    if validation_data is not None or kind_of(x) != "arrays":
        raise errors.invalid_argument(
            "validation_split",
            split,
            "0.0 when validation_data is given or x is not arrays or DataFrames "
            "(a dataset, generator, PyDataset or input_fn cannot be split)",
        )
    if not 0.0 < split < 1.0:
        raise errors.invalid_argument("validation_split", split, "a float in (0, 1)")
    x, y, sample_weight = (
        tables.to_arrays(v, n) for v, n in ((x, "x"), (y, "y"), (sample_weight, "sample_weight"))
    )
    rows = validation.check_arrays(x=x, y=y, sample_weight=sample_weight)
    cut = int(rows * (1.0 - split))

    def head(v):
        return None if v is None else tf.nest.map_structure(lambda a: np.asarray(a)[:cut], v)

    def tail(v):
        return None if v is None else tf.nest.map_structure(lambda a: np.asarray(a)[cut:], v)

    return head(x), head(y), head(sample_weight), (tail(x), tail(y), tail(sample_weight))
