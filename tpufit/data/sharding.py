"""How an infeed is split over workers and replicas, through `tf.distribute` only.

This module owns the auto-shard policy of every kind of input, set here and
nowhere else (`with_auto_shard_policy`):

- Arrays and Python sources (generators, `PyDataset`s) are on the host of
  every worker, not in files: they are sharded by batch (`DATA`).
- A user's `tf.data.Dataset`: in training, TensorFlow's `AUTO` policy (each
  worker reads its own files when the dataset reads files), unless the user
  set one; in evaluation and prediction, by batch (`DATA`), so every worker
  sees the same sequence of padded batches and stop signals — the
  results are then exact and in order, and every worker stops at the same step.
- An `input_fn` builds one pipeline per worker through
  `strategy.distribute_datasets_from_function`; it shards itself with its
  `TPUContext`, so TensorFlow does no auto-sharding.

With several workers, evaluation and prediction run a number of steps known
in advance (`with_known_steps`): no worker can stop on a stop signal alone.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tpufit import cluster
from tpufit.config import Mode
from tpufit.data import composite, dataset_stream, infeed, kinds, padding
from tpufit.data.request import InfeedRequest

_POLICY = tf.data.experimental.AutoShardPolicy


def with_auto_shard_policy(feed: infeed.Infeed, kind: str) -> infeed.Infeed:
    """Returns `feed` with the auto-shard policy its kind of input needs (see above).

    Args:
        feed: The infeed an adapter built.
        kind: The kind of the input it was built from (`kinds.kind_of`).
    """
    if kind == kinds.INPUT_FN or (kind == kinds.DATASET and feed.mode == Mode.TRAIN):
        return feed
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = _POLICY.DATA
    tail = feed.tail.with_options(options) if feed.tail is not None else None
    return dataclasses.replace(feed, dataset=feed.dataset.with_options(options), tail=tail)


def with_known_steps(
    feed: infeed.Infeed, request: InfeedRequest, strategy: tf.distribute.Strategy
) -> infeed.Infeed:
    """Returns `feed` with its `steps_per_pass` counted when several workers need it known.

    Every worker of an evaluation or prediction must run the same, known
    number of steps (a stop signal cannot end a collective step); when
    neither `steps` nor the stream tells it, the stream is read once to count.

    Raises:
        TPUFitError: An error a Python source raised while being counted.
    """
    several_workers = cluster.worker_count(strategy) > 1
    if not several_workers or request.mode == Mode.TRAIN or request.steps is not None:
        return feed
    if feed.steps_per_pass is not None:
        return feed
    stream = feed.dataset.take_while(lambda data, signals: not signals["stop"][0])
    try:
        steps = dataset_stream.count_batches(stream)
    except tf.errors.OpError as error:
        # Read here, not by the run: the source's own error is the clearer one.
        if not feed.pipeline_errors:
            raise
        raise feed.pipeline_errors[-1] from error
    return dataclasses.replace(feed, steps_per_pass=steps)


def distribute(strategy: tf.distribute.Strategy, source: infeed.Infeed | tf.data.Dataset):
    """Returns the distributed dataset of an infeed (or of a plain stream such as a tail).

    On several replicas of one worker, a padded batch's rows are first put in
    `padding.replica_order`, so each replica gets the real rows a distributed
    dataset would give it; ragged batches are then cut into the replicas'
    shares here (`composite.replica_shares`), as TF would cut them.
    """
    if isinstance(source, infeed.Infeed):
        if source.dataset_fn is not None:
            return strategy.distribute_datasets_from_function(source.dataset_fn)
        source = source.dataset
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and cluster.worker_count(strategy) == 1:
        source = source.map(lambda data, signals: padding.in_replica_order(data, signals, replicas))
        if composite.any_ragged_spec(source.element_spec):
            shares = composite.replica_shares(source, replicas)
            return strategy.distribute_datasets_from_function(lambda context: shares)
    return strategy.experimental_distribute_dataset(source)
